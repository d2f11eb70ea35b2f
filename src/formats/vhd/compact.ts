/**
 * Compact (and the close-up that discard shares): blocks that read as zeros dropped, then the
 * relayout engine (common/relayout.ts) moves the highest blocks into the holes and cuts the
 * file behind a new footer (NOTES.md "Compact and discard"). Every batch: copy, flush, BAT
 * entries, flush.
 */
import { DiskError } from '../../core/errors.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { isZero } from '../../binary/zeros.js';
import { compactMap } from '../common/relayout.js';
import { vhdRelayout, type VhdMap } from './map.js';
import { checkWritable, typeOf, type VhdFile } from './state.js';

/**
 * Drop blocks that read as zeros (in a differencing image only blocks with no sector stored:
 * stored zeros hide the parent and VHD has no other way to say so), move the highest blocks
 * into the holes, and cut the file behind a new footer. Fixed images: NOTSUPPORTED.
 */
export async function compact(file: VhdFile, map: VhdMap, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  checkWritable(file);
  await map.commitPending();
  const d = file.dyn;
  if (!d) throw new DiskError('NOTSUPPORTED', 'a fixed VHD cannot be compacted', { path: file.path, field: 'diskType', found: 'fixed' });
  const fileBytesBefore = await file.store.size();
  const diff = typeOf(file) === 'differencing';
  const m = vhdRelayout(file, map, 16);
  m.droppable = async ({ entry: b }, scratch) => {
    if (diff) return isZero(await map.bitmap(b));
    const buf = scratch.subarray(0, d.blockSize);
    await map.readBlock(b, buf, 0);
    return isZero(buf);
  };
  m.drop = (items) => map.dropBlocks(items.map((it) => it.entry));
  const { moved } = await compactMap(m, opts);
  return { fileBytesBefore, fileBytesAfter: await file.store.size(), moved };
}

/**
 * Close up the block area and cut the file (NOTES.md "Compact and discard"): the highest
 * blocks are copied into the lowest gaps below them that hold a whole block, flush, their BAT
 * entries, flush; then a footer at the new end (space nothing uses), flush, and the file
 * truncated after it: until the truncate the old footer is still the last sector.
 */
export async function closeUp(file: VhdFile, map: VhdMap): Promise<void> {
  await compactMap(vhdRelayout(file, map, 16));
}
