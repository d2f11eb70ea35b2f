/**
 * Checks of the image contract shared by the contract suite and the property model: a disk
 * against a sparse MemoryStore holding what it must read as.
 */
import assert from 'node:assert/strict';
import { checkDisk, DiskError, MemoryStore, type BlockExtent, type Disk, type Namespace } from '../../src/index.js';
import { firstDifference } from './model.js';
import { xorshiftBytes } from './prng.js';

export interface Range {
  offset: number;
  length: number;
}

/** `len` bytes of a seeded stream with no zero byte, so every written byte is data even to a driver that finds data by reading (raw) */
export function nonZeroBytes(len: number, seed: number): Buffer {
  const b = xorshiftBytes(len, seed);
  for (let i = 0; i < len; i++) if (b[i] === 0) b[i] = 0x5a;
  return b;
}

/** the disk reads [offset, offset+length) as the model holds it */
export async function expectReads(d: Disk, model: MemoryStore, r: Range, when: string): Promise<void> {
  if (r.length === 0) return;
  const got = await d.read(r.offset, r.length);
  const want = await model.read(r.offset, r.length);
  const at = firstDifference(got, want);
  if (at >= 0) assert.fail(`${when}: byte ${r.offset + at} reads ${got[at]}, expected ${want[at]} (range ${r.offset}+${r.length})`);
}

const SLICE = 4 * 2 ** 20;
const ZEROS = Buffer.alloc(SLICE);
const scratch = Buffer.alloc(SLICE);

/**
 * Block status covers the range exactly, in order, with no empty runs; every run not called
 * data holds zeros in the model. Returns the runs.
 */
export async function expectStatus(d: Disk, model: MemoryStore, r: Range, when: string): Promise<BlockExtent[]> {
  const runs = await d.blockStatus(r.offset, r.length);
  let pos = r.offset;
  for (const s of runs) {
    assert.equal(s.offset, pos, `${when}: block status is contiguous and in order`);
    assert.ok(s.length > 0, `${when}: no empty block status runs`);
    assert.ok(['data', 'zero', 'unallocated'].includes(s.state), `${when}: state ${s.state}`);
    if (s.state !== 'data') {
      // big runs (a 2 GiB split disk) are compared a slice at a time, by memcmp against zeros
      for (let o = s.offset; o < s.offset + s.length; o += SLICE) {
        const n = Math.min(SLICE, s.offset + s.length - o);
        const m = scratch.subarray(0, n);
        await model.readInto(m, o);
        if (!m.equals(ZEROS.subarray(0, n))) {
          const nz = m.findIndex((b) => b !== 0);
          assert.fail(`${when}: ${s.state} run ${s.offset}+${s.length} but byte ${o + nz} is ${m[nz]}`);
        }
      }
    }
    pos += s.length;
  }
  assert.equal(pos, r.offset + r.length, `${when}: block status covers the range exactly`);
  return runs;
}

/** the state of the run holding byte `x` */
export function stateAt(runs: readonly BlockExtent[], x: number): BlockExtent {
  const s = runs.find((e) => e.offset <= x && x < e.offset + e.length);
  assert.ok(s, `no block status run holds byte ${x}`);
  return s;
}

/** bytes of this layer's data runs (a chain's runs at depth 0) */
export function dataBytes(runs: readonly BlockExtent[]): number {
  return runs.filter((s) => s.state === 'data' && (s.depth ?? 0) === 0).reduce((a, s) => a + s.length, 0);
}

/**
 * check (without repair) finds no corruption and no leak, in the image and its links; with
 * `allowLeaks` only no corruption (a discard may leave space unused until a compact)
 */
export async function expectCheckClean(path: string, ns: Namespace, when: string, allowLeaks = false): Promise<void> {
  const rep = await checkDisk(path, { repair: false, namespace: ns });
  const open = [rep, ...(rep.links ?? [])].flatMap((r) => r.findings).filter((f) => f.kind === 'corruption' || (f.kind === 'leak' && !allowLeaks));
  assert.deepEqual(open, [], `${when}: check finds nothing`);
}

/** `fn` fails with a DiskError of `code` */
export async function expectCode(code: string, fn: () => Promise<unknown>, when: string): Promise<void> {
  await assert.rejects(fn, (err: unknown) => {
    assert.ok(err instanceof DiskError, `${when}: a DiskError, got ${String(err)}`);
    assert.equal(err.code, code, `${when}: ${err.message}`);
    return true;
  });
}

/** the ranges widened by `pad` on each side, clipped to the disk, merged */
export function windows(ranges: readonly Range[], pad: number, capacity: number): Range[] {
  const w = ranges
    .map((r) => ({ lo: Math.max(0, r.offset - pad), hi: Math.min(capacity, r.offset + r.length + pad) }))
    .sort((a, b) => a.lo - b.lo);
  const out: Range[] = [];
  for (const x of w) {
    const last = out[out.length - 1];
    if (last && x.lo <= last.offset + last.length) last.length = Math.max(last.length, x.hi - last.offset);
    else out.push({ offset: x.lo, length: x.hi - x.lo });
  }
  return out;
}

/** total bytes of the image's files (info.files) in its namespace */
export async function fileBytes(ns: Namespace, files: readonly string[]): Promise<number> {
  let n = 0;
  for (const f of files) n += (await ns.stat(f)).size;
  return n;
}
