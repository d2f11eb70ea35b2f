/**
 * Property test for chains: random writes at random depths (each "child" op makes a new top
 * over the current chain, monolithic or split), attach (a new child of an older generation,
 * written to), commit into the parent, merge of the parent into the top, safe rebase onto an
 * older generation or onto nothing, reads and reopens — against a flattened raw model per
 * generation and per attached child. Every disk must keep reading exactly as its model says.
 *
 * Environment: VDKIT_PROP_RUNS (default 50), VDKIT_PROP_SEED / VDKIT_PROP_PATH to replay.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Disk, DiskError } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { commit, mergeIntoTop } from '../../src/ops/commit.js';
import { rebase } from '../../src/ops/rebase.js';
import { xorshiftBytes } from '../helpers/prng.js';

const MiB = 2 ** 20;
const CAPACITY = 6 * MiB + 3 * 512; // last grain partial
const RUNS = Number(process.env.VDKIT_PROP_RUNS ?? 50);
const SEED = process.env.VDKIT_PROP_SEED === undefined ? undefined : Number(process.env.VDKIT_PROP_SEED);
const PATH = process.env.VDKIT_PROP_PATH;

type Op =
  | { op: 'write'; offset: number; length: number; seed: number }
  | { op: 'read'; offset: number; length: number }
  | { op: 'child'; split: boolean }
  | { op: 'reopen' }
  | { op: 'generation'; pick: number }
  | { op: 'attach'; pick: number; offset: number; length: number; seed: number }
  | { op: 'commit' }
  | { op: 'merge' }
  | { op: 'rebase'; pick: number };

const offsetArb = fc.oneof(
  fc.integer({ min: 0, max: CAPACITY - 1 }),
  fc.constantFrom(0, 65535, 65536, 65536 * 3 - 7, 2 * MiB, CAPACITY - 512, CAPACITY - 1),
);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('write' as const), offset: offsetArb, length: fc.integer({ min: 1, max: 200 * 1024 }), seed: fc.integer({ min: 1, max: 2 ** 31 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('read' as const), offset: offsetArb, length: fc.integer({ min: 1, max: 300 * 1024 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('child' as const), split: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ op: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('generation' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('attach' as const), pick: fc.nat(), offset: offsetArb, length: fc.integer({ min: 1, max: 100 * 1024 }), seed: fc.integer({ min: 1, max: 2 ** 31 }) }) },
  { weight: 1, arbitrary: fc.constant({ op: 'commit' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'merge' as const }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('rebase' as const), pick: fc.nat() }) },
);

test('chains: random writes at random depths read like a flattened model, every generation kept', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
      const dir = mkdtempSync(join(tmpdir(), 'vdkit-chainprop-'));
      try {
        let top = join(dir, 'base.vmdk');
        let disk = await Disk.create(top, { capacity: CAPACITY });
        let model = Buffer.alloc(CAPACITY);
        const generations: { path: string; model: Buffer }[] = [];
        const attached: { path: string; model: Buffer; parent: string }[] = [];
        for (const o of ops) {
          if (o.op === 'write') {
            const length = Math.min(o.length, CAPACITY - o.offset);
            const data = xorshiftBytes(length, o.seed);
            await disk.write(o.offset, data);
            data.copy(model, o.offset);
          } else if (o.op === 'read') {
            const length = Math.min(o.length, CAPACITY - o.offset);
            assert.ok((await disk.read(o.offset, length)).equals(model.subarray(o.offset, o.offset + length)), `read at ${o.offset}+${length}`);
          } else if (o.op === 'child') {
            await disk.close();
            generations.push({ path: top, model: Buffer.from(model) });
            disk = await createChild(top, undefined, { type: o.split ? 'twoGbMaxExtentSparse' : 'monolithicSparse' });
            top = disk.path;
          } else if (o.op === 'reopen') {
            await disk.close();
            disk = await Disk.open(top);
          } else if (o.op === 'generation') {
            if (generations.length === 0) continue;
            // an older generation, opened as a chain of its own, still reads as it did
            const g = generations[o.pick % generations.length]!;
            const old = await Disk.open(g.path, { readOnly: true });
            assert.ok((await old.read(0, CAPACITY)).equals(g.model), `generation ${g.path}`);
            await old.close();
          } else if (o.op === 'attach') {
            if (generations.length === 0) continue;
            const g = generations[o.pick % generations.length]!;
            const a = await createChild(g.path, join(dir, `att-${attached.length}.vmdk`));
            const length = Math.min(o.length, CAPACITY - o.offset);
            const data = xorshiftBytes(length, o.seed);
            await a.write(o.offset, data);
            const m = Buffer.from(g.model);
            data.copy(m, o.offset);
            assert.ok((await a.read(0, CAPACITY)).equals(m), 'attached child');
            await a.close();
            attached.push({ path: a.path, model: m, parent: g.path });
          } else if (o.op === 'commit') {
            if (generations.length === 0) continue;
            await disk.close();
            const parent = generations[generations.length - 1]!;
            const sibling = attached.some((a) => a.parent === parent.path);
            if (sibling) {
              await assert.rejects(commit(top), (e: DiskError) => e.code === 'RDONLY');
            } else {
              await commit(top);
              parent.model = Buffer.from(model); // the parent now holds what the top read
            }
            disk = await Disk.open(top);
          } else if (o.op === 'merge') {
            if (generations.length === 0) continue;
            await disk.close();
            await mergeIntoTop(top);
            // no longer below the top: removed, unless an attached child still uses it
            const gone = generations.pop()!;
            if (existsSync(gone.path)) attached.push({ ...gone, parent: generations.at(-1)?.path ?? '' });
            disk = await Disk.open(top);
            assert.equal((await disk.info()).numLinks, generations.length + 1);
          } else {
            if (generations.length === 0) continue;
            await disk.close();
            // onto an older generation below the parent, or onto nothing
            const i = o.pick % (generations.length + 1) - 1;
            await rebase(top, i < 0 ? undefined : generations[i]!.path);
            // the generations the top no longer uses stay as they were, still children of theirs
            for (let k = i + 1; k < generations.length; k++) attached.push({ ...generations[k]!, parent: generations[k - 1]?.path ?? '' });
            generations.length = i + 1;
            disk = await Disk.open(top);
            assert.equal((await disk.info()).numLinks, generations.length + 1);
          }
        }
        for (const a of attached) {
          const d = await Disk.open(a.path, { readOnly: true });
          assert.ok((await d.read(0, CAPACITY)).equals(a.model), `attached ${a.path} at the end`);
          await d.close();
        }
        assert.equal((await disk.info()).numLinks, generations.length + 1);
        await disk.close();
        const r = await Disk.open(top, { readOnly: true });
        assert.ok((await r.read(0, CAPACITY)).equals(model), 'whole disk after reopen');
        const st = await r.blockStatus();
        for (const s of st) if (s.state !== 'data') assert.ok(model.subarray(s.offset, s.offset + s.length).equals(Buffer.alloc(s.length)), `${s.state} range at ${s.offset} reads as zeros`);
        await r.close();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: RUNS, seed: SEED, path: PATH, endOnFailure: true },
  );
});
