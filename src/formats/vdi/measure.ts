/**
 * Measure layout of a VDI image as createVdi lays it out: header and block map up to offData
 * (freshLayout, 1 MiB aligned), then one 1 MiB block per allocated map entry, appended in the
 * order written; a fixed image holds every block from the start.
 */
import { DiskError } from '../../core/errors.js';
import { ceilDiv } from '../../core/ints.js';
import { unitCount } from '../common/measure.js';
import type { CreateOptions, MeasureLayout } from '../types.js';
import { MAX_CREATE_BYTES, TYPE_ALIASES } from './layout.js';
import { DEFAULT_BLOCK_SIZE, SECTOR, TYPE_FIXED, TYPE_NORMAL, freshLayout } from './structs.js';

export function measureVdi(opts: CreateOptions): MeasureLayout {
  const type = opts.type === undefined ? TYPE_NORMAL : TYPE_ALIASES[opts.type.toLowerCase()];
  if (type !== TYPE_NORMAL && type !== TYPE_FIXED) throw new DiskError('INVAL', `unknown VDI type ${JSON.stringify(opts.type)}`, { field: 'type', expected: 'dynamic or fixed' });
  if (!Number.isSafeInteger(opts.capacity) || opts.capacity <= 0) throw new DiskError('INVAL', 'capacity must be a positive whole number of bytes', { field: 'capacity', found: opts.capacity });
  const capacity = ceilDiv(opts.capacity, SECTOR) * SECTOR;
  if (capacity > MAX_CREATE_BYTES) throw new DiskError('INVAL', 'capacity is over the VDI limit QEMU and VirtualBox share', { field: 'capacity', expected: `<= ${MAX_CREATE_BYTES}`, found: capacity });
  const blocks = ceilDiv(capacity, DEFAULT_BLOCK_SIZE);
  const { offData } = freshLayout(blocks);
  const fullyAllocated = offData + blocks * DEFAULT_BLOCK_SIZE;
  if (type === TYPE_FIXED) return { capacity, unit: DEFAULT_BLOCK_SIZE, required: () => fullyAllocated, fullyAllocated, notes: [] };
  return { capacity, unit: DEFAULT_BLOCK_SIZE, required: (runs) => offData + unitCount(runs) * DEFAULT_BLOCK_SIZE, fullyAllocated, notes: [] };
}
