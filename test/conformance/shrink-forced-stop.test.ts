/**
 * A forced shrink (data in the part cut off) stopped at every one of its file writes, flushes
 * and truncates in turn: the disk must read as the old one (old size, all of its data) or the
 * new one (new size, the data before the new end), never the old size with part of the tail
 * already zeroed. The stop is made in-process: from the chosen step on every file write, flush
 * and truncate throws, so the file holds exactly what a kill at that moment leaves (the random
 * SIGKILL runs of shrink-kill.test.ts keep the cut part zeros, where zeroing it early would not
 * show). The new end lies inside a stored block, so the tail of that block is zeroed.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk, FileStore, resize } from '../../src/index.js';
import { tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;
const OLD = 8 * MiB;
const NEW = 5 * MiB + MiB / 2;
const FILL = 0xab;

const KINDS: { label: string; format: string; ext: string; create: Record<string, unknown> }[] = [
  { label: 'vdi dynamic', format: 'vdi', ext: 'vdi', create: {} },
  { label: 'vdi fixed', format: 'vdi', ext: 'vdi', create: { type: 'fixed' } },
  { label: 'vhd dynamic', format: 'vhd', ext: 'vhd', create: {} },
  { label: 'vhdx dynamic', format: 'vhdx', ext: 'vhdx', create: { blockSize: MiB } },
  { label: 'qcow2', format: 'qcow2', ext: 'qcow2', create: {} },
];

type Fn = (...args: unknown[]) => Promise<unknown>;
const METHODS = ['write', 'writev', 'flush', 'truncate'] as const;

/** run `op` with every file write, flush and truncate from the `stopAt`-th on failing; returns the steps taken */
async function stopped(stopAt: number, op: () => Promise<unknown>): Promise<{ steps: number; stoppedEarly: boolean }> {
  const proto = FileStore.prototype as unknown as Record<string, Fn>;
  const orig = new Map(METHODS.map((m) => [m, proto[m]!]));
  let steps = 0;
  for (const m of METHODS) {
    proto[m] = function (this: unknown, ...args: unknown[]) {
      if (++steps >= stopAt) return Promise.reject(new Error('stopped'));
      return orig.get(m)!.apply(this, args);
    };
  }
  try {
    await op();
    return { steps, stoppedEarly: false };
  } catch (err) {
    if (!`${(err as Error).message} ${String((err as { cause?: unknown }).cause)}`.includes('stopped')) throw err;
    return { steps, stoppedEarly: true };
  } finally {
    for (const m of METHODS) proto[m] = orig.get(m)!;
  }
}

async function make(path: string, k: (typeof KINDS)[number]): Promise<void> {
  const d = await Disk.create(path, { format: k.format, capacity: OLD, ...k.create });
  await d.write(0, Buffer.alloc(OLD, FILL));
  await d.close();
}

// one kind at a time: the stop is a patch of FileStore's prototype, for the whole process
test('a forced shrink stopped at any step leaves the old disk or the new one', async (t) => {
  for (const k of KINDS) {
    await t.test(k.label, async (t) => {
    const dir = (await tmpDir(t)).path;
    const probe = join(dir, `probe.${k.ext}`);
    await make(probe, k);
    const whole = await stopped(Infinity, () => resize(probe, NEW, { shrink: true, force: true }));
    assert.ok(whole.steps > 0);
    let old = 0;
    let fresh = 0;
    for (let at = 1; at <= whole.steps; at++) {
      const p = join(dir, `s${at}.${k.ext}`);
      await make(p, k);
      await stopped(at, () => resize(p, NEW, { shrink: true, force: true }));
      const d = await Disk.open(p, { readOnly: true });
      try {
        const size = d.capacity;
        assert.ok(size === OLD || size === NEW, `${k.label} stopped at step ${at}: size ${size}`);
        const content = await d.read(0, size);
        const bad = content.findIndex((b) => b !== FILL);
        assert.equal(bad, -1, `${k.label} stopped at step ${at}: size ${size}, byte ${bad} is not the old data`);
        if (size === OLD) old++;
        else fresh++;
      } finally {
        await d.close();
      }
    }
    t.diagnostic(`${k.label}: ${whole.steps} steps; stopped before the switch ${old} times, after it ${fresh}`);
    assert.ok(old > 0 && fresh > 0, 'stops land on both sides of the switch');
    });
  }
});
