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
 * With `detectZeroes` the data ranges are read and only units holding a non-zero byte count,
 * which is what convert and the drivers allocate (they skip all-zero blocks and clusters): exact
 * where the source's own granularity is coarser than the target's (a 64 KiB qcow2 cluster
 * holding 4 KiB of data, measured for 4 KiB clusters), at the cost of reading the data.
 */
import { DiskError } from '../core/errors.js';
import type { Disk, DiskCreateOptions } from '../disk.js';
import { measureLayout } from '../formats/registry.js';
import type { UnitRun } from '../formats/types.js';
import { isZero } from '../binary/zeros.js';

export interface MeasureOptions extends Omit<DiskCreateOptions, 'capacity' | 'format'> {
  /** target format */
  format: string;
  /** target capacity (default: the source's; required without a source) */
  capacity?: number;
  /** the target's file name, for formats whose descriptor names their files (VMDK flat/split) */
  name?: string;
  /** read the data ranges and count only allocation units that hold a non-zero byte */
  detectZeroes?: boolean;
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
  const { format, name, signal, detectZeroes, capacity: _c, ...create } = opts;
  const layout = measureLayout(format, { ...create, capacity }, name);
  const runs: UnitRun[] = [];
  const addUnits = (first: number, end: number) => {
    const last = runs[runs.length - 1];
    if (last && first <= last.first + last.count) last.count = Math.max(last.count, end - last.first);
    else runs.push({ first, count: end - first });
  };
  // fixed and flat types take the same room whatever holds data: nothing to read
  const dataMatters = layout.required([]) !== layout.fullyAllocated;
  let dataBytes = 0;
  if (src) {
    const total = Math.min(capacity, src.capacity);
    const unit = layout.unit;
    for (let at = 0; at < total; at += STATUS_PIECE) {
      if (signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: src.path }, { cause: signal.reason });
      for (const r of await src.blockStatus(at, Math.min(STATUS_PIECE, total - at))) {
        if (r.state !== 'data' || r.length === 0) continue;
        dataBytes += r.length;
        if (detectZeroes && dataMatters) await addNonZeroUnits(src, r.offset, r.length, unit, addUnits, signal);
        else addUnits(Math.floor(r.offset / unit), Math.floor((r.offset + r.length - 1) / unit) + 1);
      }
    }
  }
  return { format, capacity: layout.capacity, required: layout.required(runs), fullyAllocated: layout.fullyAllocated, dataBytes, notes: layout.notes };
}

/** bytes read at a time by zero detection (whole units, at least one) */
const READ_PIECE = 4 * 1024 * 1024;

/** the units of [offset, offset+length) that hold a non-zero byte, by reading them */
async function addNonZeroUnits(src: Disk, offset: number, length: number, unit: number, add: (first: number, end: number) => void, signal?: AbortSignal): Promise<void> {
  const end = offset + length;
  // pieces of whole units (the first may start inside its unit), or pieces of one large unit
  const step = unit <= READ_PIECE ? Math.floor(READ_PIECE / unit) * unit : READ_PIECE;
  const buf = Buffer.allocUnsafe(Math.min(step, length));
  let skipTo = -1; // a large unit already found non-zero: the rest of it need not be read
  for (let at = offset; at < end; ) {
    if (signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: src.path }, { cause: signal.reason });
    const u0 = Math.floor(at / unit);
    if (u0 * unit < skipTo) {
      at = Math.min(end, skipTo);
      continue;
    }
    const pieceEnd = Math.min(end, unit <= READ_PIECE ? u0 * unit + step : at + step);
    const view = buf.subarray(0, pieceEnd - at);
    await src.readInto(view, at);
    for (let u = u0; u * unit < pieceEnd; u++) {
      const from = Math.max(u * unit, at) - at;
      const to = Math.min((u + 1) * unit, pieceEnd) - at;
      if (isZero(view, from, to)) continue;
      add(u, u + 1);
      if (unit > READ_PIECE) skipTo = (u + 1) * unit;
    }
    at = pieceEnd;
  }
}

