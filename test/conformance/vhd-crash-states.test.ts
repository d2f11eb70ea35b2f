/**
 * Power-cut states of a differencing VHD under writes that allocate blocks (issue 14's crash
 * explorer, for the allocation order): every flush prefix plus random subsets of the sectors
 * written after it. After `check --repair` each state must check clean and read, sector by
 * sector, as the disk was at the barrier or as the next round left it, with every flushed write
 * intact. The old order (BAT entry written with the block, no barrier) fails: a BAT entry that
 * lands without its bitmap makes the old footer's bytes a bitmap that hides the parent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Disk, checkDisk, createChild } from '../../src/index.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';
import { crashState, record } from '../helpers/write-recorder.js';

const MiB = 1024 * 1024;
const CAPACITY = 8 * MiB;
const SECTOR = 512;

test('differencing VHD: every power-cut state after allocations keeps flushed data and repairs clean', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vdkit-vhd-crash-'));
  try {
    const base = join(dir, 'base.vhd');
    const child = join(dir, 'child.vhd');
    const b = await Disk.create(base, { format: 'vhd', capacity: CAPACITY });
    await b.write(0, xorshiftBytes(CAPACITY, 7));
    await b.close();
    await (await createChild(base, child)).close();
    const start = await readFile(child);

    // rounds of writes into fresh and allocated blocks, no two writes of a round overlapping
    const rnd = mulberry32(1234);
    const models: Buffer[] = [xorshiftBytes(CAPACITY, 7)];
    const rounds: { offset: number; length: number }[][] = [];
    /** ops.length after each round's flush: the ops before it are durable */
    const ends: number[] = [0];
    const { ops } = await record(child, async (live) => {
      const d = await Disk.open(child);
      for (let r = 0; r < 4; r++) {
        const model = Buffer.from(models.at(-1)!);
        const used: { offset: number; length: number }[] = [];
        for (let w = 0; w < 4; w++) {
          const length = (1 + Math.floor(rnd() * 64)) * SECTOR;
          const offset = Math.floor(rnd() * ((CAPACITY - length) / SECTOR)) * SECTOR;
          if (used.some((u) => offset < u.offset + u.length && u.offset < offset + length)) continue;
          const data = xorshiftBytes(length, 100 + r * 10 + w);
          await d.write(offset, data);
          data.copy(model, offset);
          used.push({ offset, length });
        }
        await d.flush();
        ends.push(live.length);
        models.push(model);
        rounds.push(used);
      }
      await d.close();
    });
    assert.ok(ops.some((o) => o.kind === 'flush'), 'the writes were flushed');

    let states = 0;
    for (let k = 0; k < rounds.length; k++) {
      // after round k's flush the disk is models[k]; round k+1's ops may be in flight
      // the durable prefix ends at the round's start or after any flush inside it (the driver
      // flushes before its BAT entries); the ops up to the next flush may be in flight
      const cuts = [ends[k]!];
      for (let i = ends[k]!; i < ends[k + 1]! - 1; i++) if (ops[i]!.kind === 'flush') cuts.push(i + 1);
      for (let s = 0; s < 52; s++) {
        const keep = s % 20 === 0 ? 0 : s % 20 === 1 ? 1 : rnd();
        const from = cuts[s % cuts.length]!;
        let to = from;
        while (to < ops.length && ops[to]!.kind !== 'flush') to++;
        const state = crashState(start, ops, from, to, rnd, keep);
        await writeFile(child, state);
        await checkDisk(child, { repair: true });
        const after = await checkDisk(child, { repair: false });
        const bad = after.findings.filter((f) => f.kind === 'corruption');
        assert.deepEqual(bad, [], `round ${k} state ${s} (ops ${from}..${to}): corruption after repair`);
        const d = await Disk.open(child, { readOnly: true });
        const got = await d.read(0, CAPACITY);
        await d.close();
        const before = models[k]!;
        const next = models[k + 1]!;
        for (let at = 0; at < CAPACITY; at += SECTOR) {
          const g = got.subarray(at, at + SECTOR);
          if (g.equals(before.subarray(at, at + SECTOR))) continue;
          assert.ok(g.equals(next.subarray(at, at + SECTOR)), `round ${k} state ${s} (ops ${from}..${to}, keep ${keep.toFixed(2)}): sector ${at / SECTOR} reads neither the flushed nor the next content`);
        }
        states++;
      }
    }
    assert.ok(states >= 200, `${states} crash states checked`);

  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
