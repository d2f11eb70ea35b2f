/**
 * Property test for VHD: random sequences of write / read / block-status / flush / reopen (and,
 * for chains, "new child") applied to a fixed VHD, a dynamic VHD and a differencing chain, and to
 * an in-memory model of the raw bytes. Writes are biased toward sector and block boundaries and
 * include sub-sector pieces (1..600 bytes), which exercise the padding of partial sectors in a
 * lone image and the chain layer's sector copy-on-write over a parent. Reads must always match
 * the model; block status must be honest (a range not reported as data reads as zeros); at the
 * end the image reopened read-only must match the model and end with a valid footer.
 *
 * Environment: VDKIT_PROP_RUNS (default 30 per kind); VDKIT_PROP_SEED / VDKIT_PROP_PATH replay.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, readSync, closeSync, fstatSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Disk } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { vhdChecksum } from '../../src/formats/vhd/structs.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { assertReadsLike, assertStatusHonest, rangeArb } from '../helpers/model.js';

const MiB = 2 ** 20;
const BLOCK = 2 * MiB;
/** three blocks and a partial fourth */
const CAPACITY = 3 * BLOCK + 7 * 512;
const RUNS = Number(process.env.VDKIT_PROP_RUNS ?? 30);
const SEED = process.env.VDKIT_PROP_SEED === undefined ? undefined : Number(process.env.VDKIT_PROP_SEED);
const PATH = process.env.VDKIT_PROP_PATH;

type Kind = 'fixed' | 'dynamic' | 'chain';
type Op =
  | { op: 'write'; offset: number; length: number; seed: number; zero: boolean }
  | { op: 'read'; offset: number; length: number }
  | { op: 'status'; offset: number; length: number }
  | { op: 'flush' }
  | { op: 'reopen' }
  | { op: 'child' };

const BOUNDARIES = [0, 512, BLOCK, 2 * BLOCK, 3 * BLOCK, CAPACITY];
const range = rangeArb(CAPACITY, BOUNDARIES, [512, 4096, BLOCK]);
const opArb = (kind: Kind): fc.Arbitrary<Op> =>
  fc.oneof(
    { weight: 6, arbitrary: fc.tuple(range, fc.integer({ min: 1, max: 0x7fffffff }), fc.boolean()).map(([r, seed, z]) => ({ op: 'write' as const, ...r, seed, zero: z && seed % 5 === 0 })) },
    { weight: 2, arbitrary: range.map((r) => ({ op: 'read' as const, ...r })) },
    { weight: 1, arbitrary: range.map((r) => ({ op: 'status' as const, ...r })) },
    { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
    { weight: 1, arbitrary: fc.constant({ op: 'reopen' as const }) },
    { weight: kind === 'chain' ? 1 : 0, arbitrary: fc.constant({ op: 'child' as const }) },
  );

function footerIsValid(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const b = Buffer.alloc(512);
    readSync(fd, b, 0, 512, size - 512);
    return b.toString('latin1', 0, 8) === 'conectix' && vhdChecksum(b, 64) === b.readUInt32BE(64);
  } finally {
    closeSync(fd);
  }
}

async function runSequence(kind: Kind, ops: Op[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vdkit-vhdprop-'));
  const model = Buffer.alloc(CAPACITY);
  let top = join(dir, 'base.vhd');
  let d: Disk | undefined = await Disk.create(top, { format: 'vhd', type: kind === 'fixed' ? 'fixed' : 'dynamic', capacity: CAPACITY });
  try {
    if (kind === 'chain') {
      // a base with data in two blocks (sector-unaligned edges), then a child on top
      for (const [o, len, seed] of [
        [100, 70000, 1],
        [BLOCK + 777, 5000, 2],
      ] as const) {
        const data = xorshiftBytes(len, seed);
        await d.write(o, data);
        data.copy(model, o);
      }
      await d.close();
      d = await createChild(top);
      top = d.path;
    }
    let depth = kind === 'chain' ? 1 : 0;
    for (const [i, o] of ops.entries()) {
      const when = `${kind} op ${i} ${JSON.stringify(o)}`;
      switch (o.op) {
        case 'write': {
          const data = o.zero ? Buffer.alloc(o.length) : xorshiftBytes(o.length, o.seed);
          await d.write(o.offset, data);
          data.copy(model, o.offset);
          await assertReadsLike(d, model, Math.max(0, o.offset - 600), Math.min(CAPACITY, o.offset + o.length + 600) - Math.max(0, o.offset - 600), when);
          break;
        }
        case 'read':
          await assertReadsLike(d, model, o.offset, o.length, when);
          break;
        case 'status':
          await assertStatusHonest(d, model, o.offset, o.length, when);
          break;
        case 'flush':
          await d.flush();
          break;
        case 'reopen':
          await d.close();
          d = undefined;
          d = await Disk.open(top);
          break;
        case 'child':
          if (depth >= 4) break;
          await d.close();
          d = undefined;
          d = await createChild(top);
          top = d.path;
          depth++;
          break;
      }
    }
    await d.close();
    d = undefined;
    assert.ok(footerIsValid(top), 'the file ends with a valid footer');
    const r = await Disk.open(top, { readOnly: true });
    try {
      await assertReadsLike(r, model, 0, CAPACITY, `${kind} after the sequence, reopened`);
      await assertStatusHonest(r, model, 0, CAPACITY, `${kind} final status`);
    } finally {
      await r.close();
    }
  } finally {
    await d?.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const kind of ['fixed', 'dynamic', 'chain'] as const) {
  test(`VHD ${kind}: random writes (incl. sub-sector), reads, status and reopens match a raw model`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb(kind), { minLength: 1, maxLength: 25 }), (ops) => runSequence(kind, ops)),
      { numRuns: RUNS, seed: SEED, path: PATH, endOnFailure: true },
    );
  });
}
