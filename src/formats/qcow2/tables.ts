/**
 * Reading the tables check and its repair steps walk: L2 tables in few large reads, and all-zero
 * entries recognised without decoding them.
 */
import type { Qcow2State } from './state.js';

/** L2 tables read in runs of adjacent clusters, at most this many bytes a read */
const TABLE_READ_BYTES = 4 * 1024 * 1024;

/** A table as 32-bit words (native order: only compared with 0), for `emptyEntry`. */
export function words(t: Buffer): Uint32Array {
  const b = t.byteOffset % 4 === 0 ? t : Buffer.from(t);
  return new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2);
}

/** an all-zero L2 entry (unallocated): most of a sparse image's tables, skipped undecoded */
export function emptyEntry(w: Uint32Array, j: number, size: number): boolean {
  const at = (j * size) >>> 2;
  return w[at] === 0 && w[at + 1] === 0 && (size === 8 || (w[at + 2] === 0 && w[at + 3] === 0));
}

/**
 * Tables of `offsets` (cluster aligned, inside the file), read in few large reads: sorted, and
 * adjacent clusters read together. Yields each table once.
 */
export async function* readTables(img: Qcow2State, offsets: Iterable<number>): AsyncGenerator<[number, Buffer]> {
  const cs = img.clusterSize;
  const sorted = [...new Set(offsets)].sort((a, b) => a - b);
  for (let i = 0; i < sorted.length; ) {
    let j = i + 1;
    while (j < sorted.length && sorted[j] === sorted[j - 1]! + cs && (j - i + 1) * cs <= TABLE_READ_BYTES) j++;
    const run = await img.storeForCheck.readZeroPadded(sorted[i]!, (j - i) * cs);
    for (let k = i; k < j; k++) yield [sorted[k]!, run.subarray((k - i) * cs, (k - i + 1) * cs)];
    i = j;
  }
}
