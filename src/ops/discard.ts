/**
 * Discard (VDDiscardRanges, TRIM): mark a byte range of a disk unused, in place.
 *
 * Design notes
 * - Whole allocation units go to the driver's `Image.discard` (unallocated in a base; in a
 *   child a zero marker or stored zeros, so the parent never shows through). Only units that
 *   hold something are passed: a unit that already reads zeros with nothing below it is left.
 * - Parts of units at either end are written as zeros, and only where something there reads
 *   other than zeros. For a child that goes through its chain, which copies the rest of the unit
 *   from the parent first (copy-on-write), so the bytes around the range stay what they were.
 * - Discard changes what the disk reads as: a disk that children depend on is refused unless
 *   `force` (as any read-write open is), and the image gets a new identity (VMDK CID).
 */
import { DiskError } from '../core/errors.js';
import { checkRange } from '../core/ints.js';
import { ChainImage } from '../chain/chain.js';
import { Disk } from '../disk.js';
import type { Image } from '../formats/types.js';
import { refuseWithout } from './compact.js';
import type { Namespace } from '../storage/namespace.js';
import { throttleCounts } from '../core/progress.js';

export interface DiscardOptions {
  format?: string;
  /** discard even though a child depends on this disk (the child then reads changed data) */
  force?: boolean;
  /** refuse parent hints that are absolute or leave the child's folder */
  untrusted?: boolean;
  /** where the disk's files are named (default: host files) */
  namespace?: Namespace;
  signal?: AbortSignal;
  /** bytes handled so far and in all */
  onProgress?: (done: number, total: number) => void;
}

export interface DiscardResult {
  /** bytes passed to the format as whole units */
  unitBytes: number;
  /** bytes written as zeros (parts of units) */
  zeroedBytes: number;
}

const STEP = 1024 * 1024 * 1024;

export async function discard(path: string, offset: number, length: number, opts: DiscardOptions = {}): Promise<DiscardResult> {
  opts = { ...opts, onProgress: throttleCounts(opts.onProgress) };
  const format = await refuseWithout(path, 'discard', opts.format, opts.namespace);
  const disk = await Disk.open(path, { namespace: opts.namespace, format, force: opts.force, untrusted: opts.untrusted });
  try {
    const image = disk.image;
    checkRange(offset, length, image.capacity, path);
    const top: Image = image instanceof ChainImage ? image.layers[0]! : image;
    const unit = top.clusterSize;
    const end = offset + length;
    const capacity = image.capacity;
    // whole units: [a, b); a unit reaching the end of the disk counts as whole
    const a = Math.min(Math.ceil(offset / unit) * unit, end);
    const b = end === capacity ? end : Math.max(a, Math.floor(end / unit) * unit);
    const result: DiscardResult = { unitBytes: 0, zeroedBytes: 0 };
    const zeroPart = async (from: number, to: number) => {
      if (to <= from) return;
      const st = await image.blockStatus(from, to - from);
      for (const r of st) {
        if (r.state !== 'data') continue;
        await image.write(Buffer.alloc(r.length), r.offset);
        result.zeroedBytes += r.length;
      }
    };
    opts.onProgress?.(0, length);
    await zeroPart(offset, a);
    for (let at = a; at < b; at += STEP) {
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path }, { cause: opts.signal.reason });
      const n = Math.min(STEP, b - at);
      // a unit that reads zeros with nothing stored anywhere below is left as it is; a zero
      // marker of this link is passed on (a format may free what it still holds)
      // (runs of a parent may be finer than this link's units: widen them to whole units)
      const runs: [number, number][] = [];
      for (const r of await image.blockStatus(at, n)) {
        if (r.state === 'unallocated' || (r.state === 'zero' && (r.depth ?? 0) !== 0)) continue;
        const from = Math.max(at, Math.floor(r.offset / unit) * unit);
        const to = Math.min(at + n, Math.ceil((r.offset + r.length) / unit) * unit);
        const last = runs[runs.length - 1];
        if (last && last[1] >= from) last[1] = Math.max(last[1], to);
        else runs.push([from, to]);
      }
      for (const [from, to] of runs) {
        await top.discard!(from, to - from);
        result.unitBytes += to - from;
      }
      opts.onProgress?.(at + n - offset, length);
    }
    await zeroPart(Math.max(a, b), end);
    await image.flush();
    opts.onProgress?.(length, length);
    return result;
  } finally {
    await disk.close();
  }
}
