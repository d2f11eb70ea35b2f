/**
 * Property test for VDI: random writes (data and all-zero buffers, at random offsets and at
 * block edges), reads and reopens on dynamic and fixed images, and on a differencing chain that
 * grows (createChild) as the sequence runs, against an in-memory model of the whole disk. After
 * every reopen the on-disk block map must keep VirtualBox's invariants: allocated indices unique
 * and dense, cBlocksAllocated equal to their count, a fixed image's identity map intact.
 *
 * Environment: VDKIT_PROP_RUNS (default 40 per variant), VDKIT_PROP_SEED to replay.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Disk } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { xorshiftBytes } from '../helpers/prng.js';

const MiB = 2 ** 20;
const BLOCK = MiB;
const CAPACITY = 5 * MiB + 3 * 512; // the last block is partial
const RUNS = Number(process.env.VDKIT_PROP_RUNS ?? 40);
const SEED = process.env.VDKIT_PROP_SEED === undefined ? undefined : Number(process.env.VDKIT_PROP_SEED);

type Op =
  | { op: 'write'; offset: number; length: number; seed: number; zero: boolean }
  | { op: 'read'; offset: number; length: number }
  | { op: 'reopen' }
  | { op: 'child' };

const offsetArb = fc.oneof(
  fc.integer({ min: 0, max: CAPACITY - 1 }),
  fc.constantFrom(0, BLOCK - 1, BLOCK, 2 * BLOCK - 512, 3 * BLOCK, 5 * BLOCK, CAPACITY - 512, CAPACITY - 1),
);
const lengthArb = fc.oneof(fc.integer({ min: 1, max: 300 * 1024 }), fc.constantFrom(BLOCK, 2 * BLOCK + 1));
const writeArb = fc.record({ op: fc.constant('write' as const), offset: offsetArb, length: lengthArb, seed: fc.integer({ min: 1, max: 2 ** 31 }), zero: fc.boolean() });
const readArb = fc.record({ op: fc.constant('read' as const), offset: offsetArb, length: lengthArb });

function opsArb(withChildren: boolean): fc.Arbitrary<Op[]> {
  const choices = [
    { weight: 6, arbitrary: writeArb as fc.Arbitrary<Op> },
    { weight: 2, arbitrary: readArb as fc.Arbitrary<Op> },
    { weight: 1, arbitrary: fc.constant({ op: 'reopen' as const }) as fc.Arbitrary<Op> },
  ];
  if (withChildren) choices.push({ weight: 2, arbitrary: fc.constant({ op: 'child' as const }) });
  return fc.array(fc.oneof(...choices), { minLength: 1, maxLength: 20 });
}

/** VirtualBox's map invariants, read straight from the file (vdi.md §6). */
async function checkMap(path: string, fixed: boolean): Promise<void> {
  const fh = await open(path, 'r');
  try {
    const h = Buffer.alloc(0x1d8);
    await fh.read(h, 0, h.length, 0);
    const offBlocks = h.readUInt32LE(0x154);
    const cBlocks = h.readUInt32LE(0x180);
    const count = h.readUInt32LE(0x184);
    const m = Buffer.alloc(4 * cBlocks);
    await fh.read(m, 0, m.length, offBlocks);
    const used = Array.from({ length: cBlocks }, (_, i) => m.readUInt32LE(4 * i)).filter((e) => e < 0xfffffffe);
    assert.equal(used.length, count, `${path}: cBlocksAllocated equals the allocated entries`);
    assert.deepEqual([...used].sort((a, b) => a - b), Array.from({ length: count }, (_, i) => i), `${path}: dense and unique`);
    if (fixed) assert.deepEqual(used, Array.from({ length: cBlocks }, (_, i) => i), `${path}: a fixed image keeps its identity map`);
  } finally {
    await fh.close();
  }
}

for (const variant of ['dynamic', 'fixed', 'chain'] as const) {
  test(`VDI ${variant}: random writes, reads and reopens read like the model`, { timeout: 60_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(opsArb(variant === 'chain'), async (ops) => {
        const dir = mkdtempSync(join(tmpdir(), 'vdkit-vdiprop-'));
        try {
          let top = join(dir, 'base.vdi');
          const links = [top];
          let disk = await Disk.create(top, { format: 'vdi', type: variant === 'fixed' ? 'fixed' : 'dynamic', capacity: CAPACITY });
          const model = Buffer.alloc(CAPACITY);
          for (const o of ops) {
            if (o.op === 'write') {
              const length = Math.min(o.length, CAPACITY - o.offset);
              const data = o.zero ? Buffer.alloc(length) : xorshiftBytes(length, o.seed);
              await disk.write(o.offset, data);
              data.copy(model, o.offset);
            } else if (o.op === 'read') {
              const length = Math.min(o.length, CAPACITY - o.offset);
              assert.ok((await disk.read(o.offset, length)).equals(model.subarray(o.offset, o.offset + length)), `read at ${o.offset}+${length}`);
            } else if (o.op === 'reopen') {
              await disk.close();
              for (const l of links) await checkMap(l, variant === 'fixed');
              disk = await Disk.open(top);
            } else if (links.length < 5) {
              await disk.close();
              disk = await createChild(top);
              top = disk.path;
              links.push(top);
            }
          }
          assert.ok((await disk.read(0, CAPACITY)).equals(model), 'whole disk before close');
          await disk.close();
          for (const l of links) await checkMap(l, variant === 'fixed');
          const r = await Disk.open(top, { readOnly: true });
          try {
            assert.ok((await r.read(0, CAPACITY)).equals(model), 'whole disk after reopen');
            // block status is honest: data/zero ranges read as the model, unallocated ranges are zeros
            for (const s of await r.blockStatus()) {
              if (s.state === 'unallocated') assert.ok(model.subarray(s.offset, s.offset + s.length).every((b) => b === 0), `unallocated ${s.offset}+${s.length} reads zeros`);
              if (s.state === 'zero') assert.ok(model.subarray(s.offset, s.offset + s.length).every((b) => b === 0), `zero ${s.offset}+${s.length} reads zeros`);
            }
            assert.equal((await r.info()).numLinks, links.length);
          } finally {
            await r.close();
          }
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: RUNS, seed: SEED },
    );
  });
}
