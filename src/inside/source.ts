/**
 * What everything under inside/ reads through: a `ByteSource` (a Disk, an Image wrapper, or a
 * volume of one), and the volume shape itself, a list of byte ranges on the disk laid end to end
 * (a partition is one range; an LVM logical volume is one range per extent run or stripe
 * chunk). Nothing here touches the file system: a reader gets bytes only through `read`.
 */
import { DiskError } from '../core/errors.js';
import { lastAtOrBelow } from '../binary/search.js';
import type { ByteRange } from '../formats/types.js';

/** Random access to bytes: `Disk` satisfies it as it is. */
export interface ByteSource {
  /** bytes */
  readonly capacity: number;
  /** exactly `length` bytes at `offset` (a range past `capacity` is an error) */
  read(offset: number, length: number): Promise<Buffer>;
}

/** bytes [offset, offset + length) of the disk: one type for volumes, bitmaps and changed areas */
export type { ByteRange };

/** a volume may be made of at most this many ranges (a striped LV of 64 GiB in 64 KiB chunks) */
export const MAX_RANGES = 1 << 20;

/**
 * The bytes of `ranges` of `base`, end to end, as one source: what a filesystem reader opens.
 * Reads are split at range ends; a binary search finds the first range, so a striped volume of a
 * million chunks costs no more per read than a partition.
 */
export class RangeSource implements ByteSource {
  readonly capacity: number;
  private readonly starts: number[] = [];

  constructor(
    readonly base: ByteSource,
    readonly ranges: readonly ByteRange[],
  ) {
    if (ranges.length > MAX_RANGES) throw new DiskError('INVAL', `a volume of ${ranges.length} ranges is more than ${MAX_RANGES}`, { field: 'ranges' });
    let at = 0;
    for (const r of ranges) {
      if (!Number.isSafeInteger(r.offset) || !Number.isSafeInteger(r.length) || r.offset < 0 || r.length < 0) {
        throw new DiskError('INVAL', 'a volume range must be non-negative whole bytes', { field: 'ranges', found: r });
      }
      this.starts.push(at);
      at += r.length;
    }
    this.capacity = at;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.capacity) {
      throw new DiskError('OUTOFRANGE', undefined, { offset, length, expected: `<= ${this.capacity}` });
    }
    // the single-range case (every partition) is a plain shifted read
    if (this.ranges.length === 1) return this.base.read(this.ranges[0]!.offset + offset, length);
    const out = Buffer.alloc(length);
    const lo = lastAtOrBelow(this.starts.length, (i) => this.starts[i]!, offset);
    let done = 0;
    for (let i = lo; done < length && i < this.ranges.length; i++) {
      const r = this.ranges[i]!;
      const within = offset + done - this.starts[i]!;
      const n = Math.min(r.length - within, length - done);
      if (n <= 0) continue;
      (await this.base.read(r.offset + within, n)).copy(out, done);
      done += n;
    }
    return out;
  }
}

/** `length` bytes at `offset` of `base` as a source */
export function sliceSource(base: ByteSource, offset: number, length: number): RangeSource {
  return new RangeSource(base, [{ offset, length }]);
}

/** `length` bytes at `offset`, or undefined when the source is too short to hold them (a probe's read) */
export async function readIfThere(src: ByteSource, offset: number, length: number): Promise<Buffer | undefined> {
  if (offset < 0 || offset + length > src.capacity) return undefined;
  return src.read(offset, length);
}

/** adjacent ranges joined, so a linear volume is one range */
export function mergeRanges(ranges: readonly ByteRange[]): ByteRange[] {
  const out: ByteRange[] = [];
  for (const r of ranges) {
    if (r.length === 0) continue;
    const last = out[out.length - 1];
    if (last && last.offset + last.length === r.offset) out[out.length - 1] = { offset: last.offset, length: last.length + r.length };
    else out.push({ offset: r.offset, length: r.length });
  }
  return out;
}
