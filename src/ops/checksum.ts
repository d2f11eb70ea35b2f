/**
 * One digest of a disk's content, the same whatever its format, type or chain: the disk is cut
 * into 1 MiB blocks, each block hashed with SHA-256, and the block hashes and the size hashed
 * again. A block that block status reports as zero or unallocated gets the precomputed hash of
 * a zero block without being read, so sparse disks are hashed at the speed of their data.
 * Written `sha256-1m:<hex>`; two disks with equal content give equal digests.
 */
import { createHash, sha256 } from '../core/platform.js';
import { DiskError } from '../core/errors.js';
import type { Disk } from '../disk.js';
import type { Progress } from './convert.js';
import { throttleProgress } from '../core/progress.js';

export const CHECKSUM_BLOCK = 1024 * 1024;
const ZERO_BLOCK_HASH = createHash('sha256').update(Buffer.alloc(CHECKSUM_BLOCK)).digest();

export interface ChecksumOptions {
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export async function checksum(d: Disk, opts: ChecksumOptions = {}): Promise<string> {
  opts = { ...opts, onProgress: throttleProgress(opts.onProgress) };
  const outer = createHash('sha256');
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(d.capacity));
  outer.update(size);
  const status = d.capacity === 0 || d.image.capabilities.blockStatus === 'emulate' ? [{ offset: 0, length: d.capacity, state: 'data' as const }] : await d.blockStatus();
  let si = 0;
  const buf = Buffer.allocUnsafe(CHECKSUM_BLOCK);
  for (let at = 0; at < d.capacity; at += CHECKSUM_BLOCK) {
    if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: d.path }, { cause: opts.signal.reason });
    const n = Math.min(CHECKSUM_BLOCK, d.capacity - at);
    while (si < status.length && status[si]!.offset + status[si]!.length <= at) si++;
    // the block is quiet when every extent overlapping it is zero or unallocated
    let quiet = true;
    for (let k = si; k < status.length && status[k]!.offset < at + n; k++) if (status[k]!.state === 'data') quiet = false;
    if (quiet && n === CHECKSUM_BLOCK) {
      outer.update(ZERO_BLOCK_HASH);
    } else {
      const chunk = buf.subarray(0, n);
      if (quiet) chunk.fill(0);
      else await d.readInto(chunk, at);
      outer.update(await sha256(chunk));
    }
    opts.onProgress?.({ done: at + n, total: d.capacity, written: 0 });
  }
  return `sha256-1m:${outer.digest('hex')}`;
}
