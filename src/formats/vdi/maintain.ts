/**
 * Compact and defragment in place (NOTES.md "Compact and discard", "Defragment"); both keep
 * the data area dense and every entry pointing at a complete copy.
 */
import { DiskError } from '../../core/errors.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { isZero } from '../../binary/zeros.js';
import { BLOCK_ZERO, TYPE_FIXED } from './structs.js';
import { compactMap, defragmentMap } from '../common/relayout.js';
import { vdiRelayout, type VdiMap } from './map.js';
import { checkWritable, type VdiFile } from './state.js';

/**
 * Drop every allocated block that reads as zeros, close up the data area and cut the file.
 * Fixed images have no spare blocks to give back (NOTSUPPORTED, as in VirtualBox).
 */
export async function compact(file: VdiFile, alloc: VdiMap, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  checkWritable(file);
  if (file.h.type === TYPE_FIXED) throw new DiskError('NOTSUPPORTED', 'a fixed VDI image cannot be compacted', { path: file.path, struct: 'VdiHeader', field: 'type', found: 'fixed' });
  const fileBytesBefore = await file.store.size();
  // the entries change but not what the disk reads: uuidModify stays (children stay valid)
  const map = vdiRelayout(file, alloc, 'compact');
  map.droppable = async (it, scratch) => {
    const buf = scratch.subarray(0, file.h.cbBlock);
    await file.store.readInto(buf, alloc.fileOffset(it.at, 0));
    return isZero(buf);
  };
  map.drop = (items) => alloc.markDropped(items.map((it) => it.entry));
  const { moved } = await compactMap(map, opts);
  return { fileBytesBefore, fileBytesAfter: await file.store.size(), moved };
}

/**
 * Defragment (NOTES.md "Defragment"): the allocated blocks put in virtual order, the one with
 * the lowest virtual index in slot 0, and so on; the data area stays dense and the file is cut
 * after the last block. The permutation from slots to ranks is walked cycle by cycle with ONE
 * scratch slot, n = cBlocksAllocated, right after the data area: the first occupant of a
 * cycle is copied there (flush, entry, flush), which empties its slot; the block that belongs
 * in an empty slot is copied in (flush, entry, flush), which empties the slot it came from;
 * the scratch copy closes the cycle. Every entry always points at a complete copy and no slot
 * is written while an entry names it, so a kill never changes what the disk reads, and the
 * count never changes (every step re-points one entry), so it always equals the entries.
 * During a cycle the scratch slot is in use and one slot below it is empty: a hole (check: a
 * leak; the read-write open asks for a repair, as after a killed compact). The scratch index
 * must be below cBlocks (QEMU's check and our open call a larger one corrupt), so a full image
 * cannot move a block: a fixed image (every block allocated, map i = i from creation; VirtualBox
 * never reorders one and refuses to compact it) is refused, as is a full dynamic image that is
 * out of order; one already in order has nothing to do.
 */
export async function defragment(file: VdiFile, alloc: VdiMap, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  checkWritable(file);
  const where = { path: file.path, struct: 'VdiHeader' };
  if (file.h.type === TYPE_FIXED) throw new DiskError('NOTSUPPORTED', 'a fixed VDI image cannot be defragmented (every block is allocated in virtual order when it is created)', { ...where, field: 'type', found: 'fixed' });
  const fileBytesBefore = await file.store.size();
  const order: number[] = [];
  for (let b = 0; b < file.map.length; b++) if (file.map[b]! < BLOCK_ZERO) order.push(b);
  const n = order.length;
  // the read-write open made the data area dense with the count equal to the entries
  if (n !== file.nextIndex) throw new DiskError('NEEDSREPAIR', 'the block map and cBlocksAllocated disagree: check -r first', { ...where, field: 'cBlocksAllocated', expected: n, found: file.nextIndex });
  const inOrder = order.every((b, r) => file.map[b] === r);
  if (!inOrder && n >= file.h.cBlocks) {
    throw new DiskError('NOTSUPPORTED', 'every block of this image is allocated: no spare block index for a crash-safe move (convert the image instead)', { ...where, field: 'cBlocksAllocated', found: n, expected: `< ${file.h.cBlocks}` });
  }
  const { moved } = await defragmentMap(vdiRelayout(file, alloc, 'defragment'), opts, { plan: 'cycles' });
  return { fileBytesBefore, fileBytesAfter: await file.store.size(), moved };
}
