/** Measure layout of a raw image: the file is the disk, whatever holds data. */
import { DiskError } from '../../core/errors.js';
import type { CreateOptions, MeasureLayout } from '../types.js';

export function measureRaw(opts: CreateOptions): MeasureLayout {
  if (!Number.isSafeInteger(opts.capacity) || opts.capacity < 0) throw new DiskError('INVAL', 'capacity must be a whole number of bytes', { field: 'capacity', found: opts.capacity });
  return { capacity: opts.capacity, unit: Math.max(opts.capacity, 1), required: () => opts.capacity, fullyAllocated: opts.capacity, notes: [] };
}
