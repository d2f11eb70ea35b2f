/**
 * A point's `vdkit checksum` kept as its parts: the SHA-256 of every 1 MiB block, in order
 * (ops/checksum.ts hashes these and the size again). A later point rehashes only the blocks its
 * changed ranges touch and takes the others from its parent's sums, so the checksum of a point
 * costs reading what changed, not the whole disk. 32 bytes per MiB of disk (32 MiB for 1 TiB).
 */
import { createHash } from '../../core/platform.js';
import { DiskError } from '../../core/errors.js';
import type { Disk } from '../../disk.js';
import type { ByteRange } from '../../formats/types.js';
import { CHECKSUM_BLOCK } from '../checksum.js';
import type { Namespace } from '../../storage/namespace.js';

const HASH = 32;

/** the number of checksum blocks of a disk of `capacity` bytes */
export function blockCount(capacity: number): number {
  return Math.ceil(capacity / CHECKSUM_BLOCK);
}

/** the `sha256-1m:` digest of a disk of `capacity` bytes with these block hashes */
export function digestOf(capacity: number, sums: Buffer): string {
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(capacity));
  return `sha256-1m:${createHash('sha256').update(size).update(sums).digest('hex')}`;
}

/**
 * The block hashes of `d`: those of the blocks `ranges` touch read from `d`, the others copied
 * from `base` (the parent point's sums). Without `base`, every block is hashed; blocks that
 * block status reports quiet are hashed as zeros without reading.
 */
export async function blockSums(d: Disk, ranges: readonly ByteRange[] | 'all', base?: Buffer, signal?: AbortSignal): Promise<Buffer> {
  const count = blockCount(d.capacity);
  const out = Buffer.alloc(count * HASH);
  if (ranges !== 'all') {
    if (!base || base.length !== out.length) throw new DiskError('CORRUPT', 'the parent point\'s block sums do not fit the disk', { path: d.path, field: 'sums', expected: out.length, found: base?.length });
    base.copy(out);
  }
  const blocks: number[] = [];
  if (ranges === 'all') for (let b = 0; b < count; b++) blocks.push(b);
  else {
    let last = -1;
    for (const r of ranges) {
      if (r.length <= 0) continue;
      const to = Math.floor((Math.min(d.capacity, r.offset + r.length) - 1) / CHECKSUM_BLOCK);
      for (let b = Math.max(last + 1, Math.floor(r.offset / CHECKSUM_BLOCK)); b <= to; b++) blocks.push((last = b));
    }
  }
  const buf = Buffer.allocUnsafe(CHECKSUM_BLOCK);
  for (const b of blocks) {
    if (signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: d.path }, { cause: signal.reason });
    const at = b * CHECKSUM_BLOCK;
    const chunk = buf.subarray(0, Math.min(CHECKSUM_BLOCK, d.capacity - at));
    const emulated = d.image.capabilities.blockStatus === 'emulate';
    if (!emulated && (await d.blockStatus(at, chunk.length)).every((e) => e.state !== 'data')) chunk.fill(0);
    else await d.readInto(chunk, at);
    createHash('sha256').update(chunk).digest().copy(out, b * HASH);
  }
  return out;
}

export async function readSums(ns: Namespace, path: string, capacity: number): Promise<Buffer> {
  const st = await ns.open(path);
  try {
    const want = blockCount(capacity) * HASH;
    const size = await st.size();
    if (size !== want) throw new DiskError('CORRUPT', 'block sums file has the wrong size for the disk', { path, field: 'size', expected: want, found: size });
    return want === 0 ? Buffer.alloc(0) : await st.read(0, want);
  } finally {
    await st.close();
  }
}
