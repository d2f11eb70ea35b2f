/** Shared checks of the model-based (property) tests: a disk against a plain buffer of its expected bytes. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { Disk } from '../../src/index.js';

/** index of the first differing byte (the shorter length when one is a prefix of the other), or -1 */
export function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/** the disk reads [offset, offset+len) as the model holds it */
export async function assertReadsLike(d: Disk, model: Buffer, offset: number, len: number, when: string): Promise<void> {
  const got = await d.read(offset, len);
  const at = firstDifference(got, model.subarray(offset, offset + len));
  if (at >= 0) assert.fail(`${when}: byte ${offset + at} reads ${got[at]}, model ${model[offset + at]}`);
}

/** block status covers the range exactly, and every range it calls zero or unallocated is zero in the model */
export async function assertStatusHonest(d: Disk, model: Buffer, offset: number, len: number, when: string): Promise<void> {
  let pos = offset;
  for (const r of await d.blockStatus(offset, len)) {
    assert.equal(r.offset, pos, `${when}: contiguous`);
    assert.ok(r.length > 0);
    if (r.state !== 'data') {
      const nz = model.subarray(r.offset, r.offset + r.length).findIndex((b) => b !== 0);
      if (nz >= 0) assert.fail(`${when}: ${r.state} range ${r.offset}+${r.length} but byte ${r.offset + nz} is ${model[r.offset + nz]}`);
    }
    pos += r.length;
  }
  assert.equal(pos, offset + len, `${when}: covers the range`);
}

/**
 * Byte ranges inside a disk of `capacity`, biased toward `boundaries` (±1500 bytes), sector
 * starts and the `lengths` the format cares about; every range lies inside the disk.
 */
export function rangeArb(capacity: number, boundaries: number[], lengths: number[]): fc.Arbitrary<{ offset: number; length: number }> {
  const position = fc.oneof(
    { weight: 3, arbitrary: fc.tuple(fc.constantFrom(...boundaries), fc.integer({ min: -1500, max: 1500 })).map(([b, d]) => b + d) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: capacity / 512 - 1 }).map((s) => s * 512) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: capacity - 1 }) },
  );
  const length = fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 1, max: 600 }) },
    { weight: 1, arbitrary: fc.constantFrom(...lengths) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 300 * 1024 }) },
  );
  return fc.tuple(position, length).map(([p, len]) => {
    const offset = Math.max(0, Math.min(p, capacity - 1));
    return { offset, length: Math.min(len, capacity - offset) };
  });
}
