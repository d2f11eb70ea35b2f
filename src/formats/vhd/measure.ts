/**
 * Measure layout of a VHD as createVhd lays it out. Fixed: the data then the 512-byte footer.
 * Dynamic: footer copy, dynamic header, BAT (padded to 512), then per allocated 2 MiB block its
 * 512-byte sector bitmap and the block, then the footer.
 */
import { DiskError } from '../../core/errors.js';
import { ceilDiv, roundUp } from '../../core/ints.js';
import { unitCount } from '../common/measure.js';
import type { CreateOptions, MeasureLayout } from '../types.js';
import { FIXED_DYNAMIC_TYPES } from '../common/create.js';
import { DEFAULT_BLOCK_SIZE, MAX_VHD_BYTES, SECTOR, chsRoundedSize } from './structs.js';

const FOOTER = SECTOR;
/** footer copy + dynamic header (1024 bytes): the BAT starts at sector 3 */
const TABLE_OFFSET = 3 * SECTOR;
const BITMAP = roundUp(Math.ceil(DEFAULT_BLOCK_SIZE / SECTOR / 8), SECTOR);

export function measureVhd(opts: CreateOptions): MeasureLayout {
  const type = opts.type === undefined ? 'dynamic' : FIXED_DYNAMIC_TYPES[opts.type.toLowerCase()];
  if (type !== 'dynamic' && type !== 'fixed') throw new DiskError('INVAL', `unknown VHD type ${JSON.stringify(opts.type)}`, { field: 'type', expected: 'dynamic or fixed' });
  if (!Number.isSafeInteger(opts.capacity) || opts.capacity <= 0) throw new DiskError('INVAL', 'capacity must be a positive whole number of bytes', { field: 'capacity', found: opts.capacity });
  let capacity = roundUp(opts.capacity, SECTOR);
  if (opts.chsRounding) capacity = chsRoundedSize(capacity).size;
  if (capacity > MAX_VHD_BYTES) throw new DiskError('INVAL', 'a VHD holds at most 2040 GiB', { field: 'capacity', expected: `<= ${MAX_VHD_BYTES}`, found: capacity });
  if (type === 'fixed') return { capacity, unit: capacity, required: () => capacity + FOOTER, fullyAllocated: capacity + FOOTER, notes: [] };
  const entries = ceilDiv(capacity, DEFAULT_BLOCK_SIZE);
  const head = TABLE_OFFSET + roundUp(entries * 4, SECTOR);
  const stride = BITMAP + DEFAULT_BLOCK_SIZE;
  return { capacity, unit: DEFAULT_BLOCK_SIZE, required: (runs) => head + unitCount(runs) * stride + FOOTER, fullyAllocated: head + entries * stride + FOOTER, notes: [] };
}
