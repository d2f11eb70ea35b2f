/**
 * Property test: random sequences of write / read / flush / reopen / block-status calls (plus
 * concurrent batches and metadata writes), applied
 * to a real VMDK (every writable createType) and to a MemoryStore holding the expected raw
 * bytes. Reads must always match the model; at the end every touched range must match after
 * a read-only reopen, and block status must be honest: a range reported 'unallocated' or 'zero'
 * must read as zeros in the model.
 *
 * The capacity (~4.1 GiB, not a grain multiple) gives the split types three extents (vdkit
 * splits at 4192256 sectors), and offsets are biased toward grain (64 KiB), grain-table
 * (32 MiB) and extent boundaries and the end of the disk. Only metadata and written data reach
 * the host disk: flat extents are sparse files.
 *
 * Environment: VDKIT_PROP_RUNS (default 25 per type); VDKIT_PROP_SEED and VDKIT_PROP_PATH replay
 * a failure (fast-check prints both in its report).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Disk, MemoryStore, SPLIT_EXTENT_SECTORS, type BlockExtent } from '../../src/index.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { firstDifference } from '../helpers/model.js';

const KiB = 1024;
const MiB = 2 ** 20;
const GRAIN = 64 * KiB;
const GT_COVERAGE = 32 * MiB;
const EXTENT = SPLIT_EXTENT_SECTORS * 512;
/** two full split extents and a third of 100 MiB + 7 sectors: ~4.1 GiB, last grain partial */
const CAPACITY = 2 * EXTENT + 100 * MiB + 7 * 512;
const MAX_IO = 300 * KiB;
const RUNS = Number(process.env.VDKIT_PROP_RUNS ?? 25);
const SEED = process.env.VDKIT_PROP_SEED === undefined ? undefined : Number(process.env.VDKIT_PROP_SEED);
const PATH = process.env.VDKIT_PROP_PATH;

const TYPES = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'vmfs'] as const;

// ------------------------------------------------------------------ operations

type Fill = { kind: 'byte'; value: number } | { kind: 'random'; seed: number };
type Op =
  | { op: 'write'; offset: number; length: number; fill: Fill }
  | { op: 'read'; offset: number; length: number }
  | { op: 'status'; offset: number; length: number }
  | { op: 'flush' }
  | { op: 'reopen' }
  /** several writes and reads issued at once: writes apply in call order (Disk queues them) */
  | { op: 'batch'; items: ({ op: 'write'; offset: number; length: number; fill: Fill } | { op: 'read'; offset: number; length: number })[] }
  /** a ddb key through writeMetadata: persists across reopen without disturbing data */
  | { op: 'meta'; key: string; value: string };

const BOUNDARIES = [
  0,
  GRAIN,
  2 * GRAIN,
  GT_COVERAGE,
  2 * GT_COVERAGE,
  EXTENT - GT_COVERAGE,
  EXTENT,
  EXTENT + GRAIN,
  2 * EXTENT,
  2 * EXTENT + GT_COVERAGE,
  CAPACITY - GRAIN,
  CAPACITY,
];

/** a raw position near an interesting boundary, or anywhere */
const position = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(fc.constantFrom(...BOUNDARIES), fc.oneof(fc.constantFrom(0, -1, 1, -512, 512, -GRAIN, GRAIN), fc.integer({ min: -512, max: 512 }), fc.integer({ min: -MAX_IO, max: MAX_IO }))).map(([b, d]) => b + d) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: Math.floor(CAPACITY / GRAIN) }).map((k) => k * GRAIN) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: Math.floor(CAPACITY / GT_COVERAGE) }).map((k) => k * GT_COVERAGE) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: CAPACITY - 1 }) },
);
const length = fc.oneof(fc.integer({ min: 1, max: 4 * KiB }), fc.constantFrom(512, GRAIN, 2 * GRAIN), fc.integer({ min: 1, max: MAX_IO }));
/** a range inside the disk: the raw position clamped so that the range fits */
const range = fc.tuple(position, length).map(([p, len]) => ({ offset: Math.max(0, Math.min(p, CAPACITY - len)), length: len }));
const fill: fc.Arbitrary<Fill> = fc.oneof(
  fc.record({ kind: fc.constant('byte' as const), value: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 255 })) }),
  fc.record({ kind: fc.constant('random' as const), seed: fc.integer({ min: 1, max: 0x7fffffff }) }),
);
const writeArb = fc.tuple(range, fill).map(([r, f]) => ({ op: 'write' as const, ...r, fill: f }));
const readArb = range.map((r) => ({ op: 'read' as const, ...r }));
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: writeArb },
  { weight: 3, arbitrary: readArb },
  { weight: 1, arbitrary: fc.array(fc.oneof(writeArb, readArb), { minLength: 2, maxLength: 5 }).map((items) => ({ op: 'batch' as const, items })) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('meta' as const), key: fc.constantFrom('vdkit.a', 'vdkit.b', 'toolsVersion'), value: fc.stringMatching(/^[A-Za-z0-9 ._-]{0,40}$/) }),
  },
  { weight: 1, arbitrary: range.map((r) => ({ op: 'status' as const, ...r })) },
  { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'reopen' as const }) },
);
const opsArb = fc.array(opArb, { minLength: 1, maxLength: 30 });

function bytesOf(f: Fill, len: number): Buffer {
  if (f.kind === 'byte') return Buffer.alloc(len, f.value);
  return xorshiftBytes(len, f.seed);
}

// ------------------------------------------------------------------ checks


async function compare(disk: Disk, model: MemoryStore, offset: number, len: number, when: string): Promise<void> {
  const got = await disk.read(offset, len);
  const want = await model.read(offset, len);
  const at = firstDifference(got, want);
  if (at >= 0) assert.fail(`${when}: content differs at byte ${offset + at} (range ${offset}+${len}): disk ${got[at]} model ${want[at]}`);
}

async function checkStatus(disk: Disk, model: MemoryStore, offset: number, len: number, when: string): Promise<void> {
  const runs: BlockExtent[] = await disk.blockStatus(offset, len);
  let pos = offset;
  for (const r of runs) {
    assert.equal(r.offset, pos, `${when}: block status is contiguous and in order`);
    assert.ok(r.length > 0, `${when}: no empty ranges`);
    assert.ok(['data', 'zero', 'unallocated'].includes(r.state));
    if (r.state !== 'data') {
      const m = await model.read(r.offset, r.length);
      const nz = m.findIndex((b) => b !== 0);
      if (nz >= 0) assert.fail(`${when}: ${r.state} range ${r.offset}+${r.length} but byte ${r.offset + nz} was written as ${m[nz]}`);
    }
    pos += r.length;
  }
  assert.equal(pos, offset + len, `${when}: block status covers the range exactly`);
}

/** the touched ranges, widened to whole grains on each side (to see stray writes next to them) */
function widened(touched: { offset: number; length: number }[]): { offset: number; length: number }[] {
  return touched.map(({ offset, length: len }) => {
    const lo = Math.max(0, Math.floor(offset / GRAIN) * GRAIN - GRAIN);
    const hi = Math.min(CAPACITY, Math.ceil((offset + len) / GRAIN) * GRAIN + GRAIN);
    return { offset: lo, length: hi - lo };
  });
}

// ------------------------------------------------------------------ the property

async function runSequence(type: (typeof TYPES)[number], ops: Op[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vdkit-prop-'));
  const path = join(dir, 'p.vmdk');
  let disk: Disk | undefined;
  try {
    disk = await Disk.create(path, { type, capacity: CAPACITY });
    assert.equal(disk.capacity, CAPACITY);
    const model = new MemoryStore(CAPACITY);
    const meta = new Map<string, string>();
    const touched: { offset: number; length: number }[] = [];
    for (const [i, o] of ops.entries()) {
      const when = `op ${i} ${o.op}`;
      switch (o.op) {
        case 'write': {
          const data = bytesOf(o.fill, o.length);
          await disk.write(o.offset, data);
          await model.write(o.offset, data);
          touched.push(o);
          break;
        }
        case 'read':
          await compare(disk, model, o.offset, o.length, when);
          touched.push(o);
          break;
        case 'status':
          await checkStatus(disk, model, o.offset, o.length, when);
          break;
        case 'flush':
          await disk.flush();
          break;
        case 'batch': {
          const d = disk;
          const overlapsAWrite = (r: { offset: number; length: number }) =>
            o.items.some((w) => w.op === 'write' && w.offset < r.offset + r.length && r.offset < w.offset + w.length);
          const before = new Map<number, Buffer>();
          for (const [k, it] of o.items.entries()) if (it.op === 'read' && !overlapsAWrite(it)) before.set(k, await model.read(it.offset, it.length));
          const results = await Promise.all(o.items.map((it) => (it.op === 'write' ? d.write(it.offset, bytesOf(it.fill, it.length)) : d.read(it.offset, it.length))));
          for (const it of o.items) if (it.op === 'write') await model.write(it.offset, bytesOf(it.fill, it.length));
          for (const [k, want] of before) {
            const at = firstDifference(results[k] as Buffer, want);
            if (at >= 0) assert.fail(`${when}: concurrent read ${k} differs at byte ${o.items[k]!.offset + at}`);
          }
          touched.push(...o.items);
          break;
        }
        case 'meta':
          await disk.writeMetadata(o.key, o.value);
          meta.set(o.key, o.value);
          assert.equal(disk.readMetadata(o.key), o.value, `${when}: readMetadata after writeMetadata`);
          break;
        case 'reopen':
          await disk.close();
          disk = undefined;
          disk = await Disk.open(path);
          assert.equal(disk.capacity, CAPACITY, `${when}: capacity after reopen`);
          assert.equal(disk.readOnly, false);
          for (const [k, v] of meta) assert.equal(disk.readMetadata(k), v, `${when}: metadata ${k} after reopen`);
          break;
      }
    }
    // the end: everything touched (and a grain around it) matches, before and after a reopen
    const ranges = [...widened(touched), { offset: 0, length: GRAIN }, { offset: CAPACITY - GRAIN, length: GRAIN }];
    for (const r of ranges) {
      await compare(disk, model, r.offset, r.length, 'final');
      await checkStatus(disk, model, r.offset, r.length, 'final');
    }
    await disk.close();
    disk = undefined;
    disk = await Disk.open(path, { readOnly: true });
    for (const r of ranges) await compare(disk, model, r.offset, r.length, 'after read-only reopen');
    for (const [k, v] of meta) assert.equal(disk.readMetadata(k), v, `metadata ${k} after read-only reopen`);
    await disk.close();
    disk = undefined;
  } finally {
    await disk?.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const type of TYPES) {
  test(`${type}: random write/read/flush/reopen sequences agree with a raw model`, async () => {
    await fc.assert(
      fc.asyncProperty(opsArb, (ops) => runSequence(type, ops)),
      { numRuns: RUNS, seed: SEED, path: PATH, interruptAfterTimeLimit: 120_000, markInterruptAsFailure: false },
    );
  });
}

test('the generators reach the boundaries they are meant to (sanity of the test itself)', () => {
  const sample = fc.sample(range, { numRuns: 2000, seed: 42 });
  const near = (b: number) => sample.some((r) => r.offset <= b && r.offset + r.length >= b && b > 0 && b < CAPACITY);
  assert.ok(near(GRAIN), 'a range crosses the first grain boundary');
  assert.ok(near(GT_COVERAGE), 'a range crosses the first grain-table boundary');
  assert.ok(near(EXTENT), 'a range crosses the first extent boundary');
  assert.ok(near(2 * EXTENT), 'a range crosses the second extent boundary');
  assert.ok(sample.some((r) => r.offset + r.length === CAPACITY), 'a range ends at the end of the disk');
  assert.ok(sample.every((r) => r.offset >= 0 && r.length >= 1 && r.offset + r.length <= CAPACITY));
  assert.ok(sample.some((r) => r.offset % 512 !== 0), 'unaligned offsets occur');
});
