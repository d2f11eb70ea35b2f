/**
 * How much room an image will take (VixDiskLib_SpaceNeededForClone, `qemu-img measure`): for a
 * target format, type and create options, and either a source disk (any format, a chain) or a
 * bare size, the bytes the target's files will hold:
 *
 *   required        after copying the source's data: the target's metadata plus one allocation
 *                   unit (grain, block, cluster) for every unit a data range of the source
 *                   touches; fixed and flat types hold the whole disk whatever the data
 *   fullyAllocated  every unit allocated
 *
 * The layout numbers come from each format (formats/<fmt>/measure.ts through the registry), the
 * data ranges from the source's block status, the way convert reads them: nothing is read
 * except where a format can only find its holes by reading (raw). Data that convert would find
 * to be all zeros still counts here, so `required` is an upper bound for a convert's result.
 */
import { DiskError } from '../core/errors.js';
import type { Disk, DiskCreateOptions } from '../disk.js';
import { measureLayout } from '../formats/registry.js';
import type { UnitRun } from '../formats/types.js';

export interface MeasureOptions extends Omit<DiskCreateOptions, 'capacity' | 'format'> {
  /** target format */
  format: string;
  /** target capacity (default: the source's; required without a source) */
  capacity?: number;
  /** the target's file name, for formats whose descriptor names their files (VMDK flat/split) */
  name?: string;
  signal?: AbortSignal;
}

export interface MeasureResult {
  format: string;
  /** the target's virtual size, after the format's own rounding */
  capacity: number;
  /** bytes the target's files will take with the source's data */
  required: number;
  /** bytes with every allocation unit of the target allocated */
  fullyAllocated: number;
  /** virtual bytes the source reports as data (what convert would copy at most) */
  dataBytes: number;
  /** what the numbers mean where it is more than file bytes (upper bounds, datastore blocks) */
  notes: string[];
}

/** block status is asked this much at a time, so an abort is seen between pieces */
const STATUS_PIECE = 64 * 1024 ** 3;

export async function measure(src: Disk | undefined, opts: MeasureOptions): Promise<MeasureResult> {
  const capacity = opts.capacity ?? src?.capacity;
  if (capacity === undefined) throw new DiskError('INVAL', 'measure needs a source disk or a size', { field: 'capacity' });
  const { format, name, signal, capacity: _c, ...create } = opts;
  const layout = measureLayout(format, { ...create, capacity }, name);
  const runs: UnitRun[] = [];
  let dataBytes = 0;
  if (src) {
    const total = Math.min(capacity, src.capacity);
    const unit = layout.unit;
    for (let at = 0; at < total; at += STATUS_PIECE) {
      if (signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: src.path }, { cause: signal.reason });
      for (const r of await src.blockStatus(at, Math.min(STATUS_PIECE, total - at))) {
        if (r.state !== 'data' || r.length === 0) continue;
        dataBytes += r.length;
        const first = Math.floor(r.offset / unit);
        const end = Math.floor((r.offset + r.length - 1) / unit) + 1;
        const last = runs[runs.length - 1];
        if (last && first <= last.first + last.count) last.count = Math.max(last.count, end - last.first);
        else runs.push({ first, count: end - first });
      }
    }
  }
  return { format, capacity: layout.capacity, required: layout.required(runs), fullyAllocated: layout.fullyAllocated, dataBytes, notes: layout.notes };
}
