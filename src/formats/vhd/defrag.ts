/**
 * Defragment: blocks back to back in virtual order after the metadata (NOTES.md
 * "Defragment"), moved by the relayout engine (common/relayout.ts).
 */
import { DiskError } from '../../core/errors.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { defragmentMap } from '../common/relayout.js';
import { vhdRelayout, type VhdMap } from './map.js';
import { checkWritable, type VhdFile } from './state.js';

/**
 * Defragment (NOTES.md "Defragment"): blocks (bitmap + data) in BAT order by virtual index,
 * back to back from the end of the dynamic header and the BAT (around parent locator data
 * that lies in the way), the file cut behind a footer after the last one. The engine's window
 * plan: blocks on a window's targets that belong elsewhere go to their own target when it is
 * free, else past the final area (past the end of the file a footer is written at the new end
 * first, as allocate does); then the window's blocks are copied in. Every batch: copy, flush,
 * BAT entries, flush, so a BAT entry always names a complete block and space is written only
 * when no entry names it. A kill leaves gaps (check: leaks) and at most a stray footer copy
 * inside unused space; the file always ends with a valid footer. Fixed images: NOTSUPPORTED
 * (their data is the disk in order).
 */
export async function defragment(file: VhdFile, map: VhdMap, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  checkWritable(file);
  await map.commitPending();
  if (!file.dyn) throw new DiskError('NOTSUPPORTED', 'a fixed VHD cannot be defragmented (its data is the disk, in order)', { path: file.path, field: 'diskType', found: 'fixed' });
  const fileBytesBefore = await file.store.size();
  const { moved } = await defragmentMap(vhdRelayout(file, map, 1), opts);
  return { fileBytesBefore, fileBytesAfter: await file.store.size(), moved };
}
