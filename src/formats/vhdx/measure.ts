/**
 * Measure layout of a VHDX as createVhdx lays it out: 1 MiB header section, 1 MiB log, the BAT
 * (rounded to 1 MiB), 1 MiB metadata region and QEMU's 4 MiB gap, then the data area: a fixed
 * image holds the whole disk there; a dynamic one appends one block per allocated BAT entry.
 */
import { DiskError } from '../../core/errors.js';
import { roundUp } from '../../core/ints.js';
import { unitCount } from '../common/measure.js';
import type { CreateOptions, MeasureLayout } from '../types.js';
import { FIXED_DYNAMIC_TYPES } from '../common/create.js';
import { ALIGN, BAT_OFFSET, DATA_GAP, LOGICAL_SECTOR, METADATA_LENGTH, MAX_BLOCK_SIZE, MAX_VIRTUAL_SIZE, MIN_BLOCK_SIZE, batEntryCount, chunkRatio, defaultBlockSize } from './structs.js';

export function measureVhdx(opts: CreateOptions): MeasureLayout {
  const type = opts.type === undefined ? 'dynamic' : FIXED_DYNAMIC_TYPES[opts.type.toLowerCase()];
  if (type !== 'dynamic' && type !== 'fixed') throw new DiskError('INVAL', `unknown VHDX type ${JSON.stringify(opts.type)}`, { field: 'type', expected: 'dynamic or fixed' });
  if (!Number.isSafeInteger(opts.capacity) || opts.capacity <= 0) throw new DiskError('INVAL', 'capacity must be a positive whole number of bytes', { field: 'capacity', found: opts.capacity });
  const capacity = roundUp(opts.capacity, LOGICAL_SECTOR);
  if (capacity > MAX_VIRTUAL_SIZE) throw new DiskError('INVAL', 'a VHDX holds at most 64 TiB', { field: 'capacity', expected: `<= ${MAX_VIRTUAL_SIZE}`, found: capacity });
  const blockSize = opts.blockSize ?? defaultBlockSize(capacity);
  if (!Number.isSafeInteger(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    throw new DiskError('INVAL', 'block size must be a power of two from 1 MiB to 256 MiB', { field: 'blockSize', found: blockSize });
  }
  const blocks = Math.ceil(capacity / blockSize);
  const batLength = roundUp(batEntryCount(blocks, chunkRatio(LOGICAL_SECTOR, blockSize), false) * 8, ALIGN);
  const dataStart = BAT_OFFSET + batLength + METADATA_LENGTH + DATA_GAP;
  if (type === 'fixed') return { capacity, unit: blockSize, required: () => dataStart + capacity, fullyAllocated: dataStart + capacity, notes: [] };
  return { capacity, unit: blockSize, required: (runs) => dataStart + unitCount(runs) * blockSize, fullyAllocated: dataStart + blocks * blockSize, notes: [] };
}
