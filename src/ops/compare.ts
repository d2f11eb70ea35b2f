/**
 * Content equality of two disks of any formats and chains (qemu-img compare). Ranges both
 * disks report as zero or unallocated are not read. Images of different sizes are equal when
 * the larger one reads as zeros past the smaller one's end, unless `strict`, which also
 * requires equal sizes and equal allocation (data vs not) everywhere, as qemu-img compare -s.
 */
import { DiskError } from '../core/errors.js';
import type { Disk } from '../disk.js';
import type { BlockExtent } from '../formats/types.js';
import type { Progress } from './convert.js';
import { throttleProgress } from '../core/progress.js';
import { lastAtOrBelow } from '../binary/search.js';

export interface CompareOptions {
  strict?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export interface CompareResult {
  identical: boolean;
  /** first differing byte offset, when not identical */
  offset?: number;
  reason?: string;
}

const CHUNK = 1024 * 1024;

/** Is the range [offset, offset+length) one that reads as zeros without looking (zero or unallocated)? */
function quietAt(status: BlockExtent[], offset: number): { quiet: boolean; end: number } {
  // status is sorted and covers the disk; binary search the extent holding `offset`
  const e = status[lastAtOrBelow(status.length, (i) => status[i]!.offset, offset)]!;
  return { quiet: e.state !== 'data', end: e.offset + e.length };
}

function firstDiff(a: Buffer, b: Buffer): number {
  for (let i = 0; i < a.length; i += 4096) {
    const n = Math.min(4096, a.length - i);
    if (a.compare(b, i, i + n, i, i + n) !== 0) for (let j = i; j < i + n; j++) if (a[j] !== b[j]) return j;
  }
  return -1;
}

export async function compare(a: Disk, b: Disk, opts: CompareOptions = {}): Promise<CompareResult> {
  opts = { ...opts, onProgress: throttleProgress(opts.onProgress) };
  if (opts.strict && a.capacity !== b.capacity) {
    return { identical: false, offset: Math.min(a.capacity, b.capacity), reason: `sizes differ (${a.capacity} and ${b.capacity} bytes)` };
  }
  const common = Math.min(a.capacity, b.capacity);
  const total = Math.max(a.capacity, b.capacity);
  // an emulated block status would read the disk once more; treat it as all data instead
  const statusOf = async (d: Disk) => (d.image.capabilities.blockStatus === 'emulate' ? [{ offset: 0, length: d.capacity, state: 'data' as const }] : d.blockStatus());
  const sa = a.capacity > 0 ? await statusOf(a) : [];
  const sb = b.capacity > 0 ? await statusOf(b) : [];
  let at = 0;
  while (at < common) {
    if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: a.path }, { cause: opts.signal.reason });
    const qa = quietAt(sa, at);
    const qb = quietAt(sb, at);
    const stop = Math.min(qa.end, qb.end, common, at + CHUNK);
    if (!(qa.quiet && qb.quiet)) {
      const [x, y] = await Promise.all([a.read(at, stop - at), b.read(at, stop - at)]);
      const d = firstDiff(x, y);
      if (d >= 0) return { identical: false, offset: at + d, reason: 'content differs' };
    }
    if (opts.strict && qa.quiet !== qb.quiet) return { identical: false, offset: at, reason: 'allocation differs' };
    at = stop;
    opts.onProgress?.({ done: at, total, written: 0 });
  }
  // past the smaller disk: the larger one must read as zeros
  const larger = a.capacity > b.capacity ? a : b;
  const sl = larger === a ? sa : sb;
  while (at < total) {
    const q = quietAt(sl, at);
    const stop = Math.min(q.end, total, at + CHUNK);
    if (!q.quiet) {
      const x = await larger.read(at, stop - at);
      const nz = x.findIndex((v) => v !== 0);
      if (nz >= 0) return { identical: false, offset: at + nz, reason: 'content past the smaller image is not zero' };
    }
    at = stop;
  }
  return { identical: true };
}
