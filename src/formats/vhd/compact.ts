/**
 * Compact (and the close-up that discard shares): blocks that read as zeros dropped, the
 * highest blocks moved into the holes, the file cut behind a new footer (NOTES.md "Compact and
 * discard"). Every move: copy, flush, BAT entry, flush.
 */
import { DiskError } from '../../core/errors.js';
import { roundUp } from '../../core/ints.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { isZero } from '../../binary/zeros.js';
import { BAT_UNUSED, FOOTER_SIZE, SECTOR } from './structs.js';
import type { DynamicState } from './layout.js';
import type { VhdMap } from './map.js';
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
  const buf = Buffer.alloc(d.blockSize);
  const drop: number[] = [];
  for (let b = 0; b < d.bat.length; b++) {
    if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: file.path }, { cause: opts.signal.reason });
    if (d.bat[b] !== BAT_UNUSED) {
      const bitmap = await map.bitmap(b);
      if (diff) {
        if (isZero(bitmap)) drop.push(b);
      } else {
        await map.readBlock(b, buf, 0);
        if (isZero(buf)) drop.push(b);
      }
    }
    opts.onProgress?.(b + 1, d.bat.length);
  }
  await map.dropBlocks(drop);
  await closeUp(file, map);
  return { fileBytesBefore, fileBytesAfter: await file.store.size() };
}

/**
 * The file cut after `newEnd` (blocks and metadata end there): a footer at the new end (space
 * nothing uses), flush, then the truncate; until the truncate the old footer is still the last
 * sector. New blocks go after the footer's place again.
 */
export async function cutAfter(file: VhdFile, newEnd: number, d: DynamicState): Promise<void> {
  if (newEnd < file.fileSize - FOOTER_SIZE) {
    await file.store.write(newEnd, file.footerBytes);
    await file.store.flush();
    await file.store.truncate(newEnd + FOOTER_SIZE);
    await file.store.flush();
    file.fileSize = newEnd + FOOTER_SIZE;
  }
  d.nextFree = roundUp(file.fileSize - FOOTER_SIZE, SECTOR);
}

/**
 * Close up the block area and cut the file (NOTES.md "Compact and discard"): the highest block
 * is copied into the lowest gap below it that holds a whole block (never overlapping itself),
 * flush, its BAT entry, flush; then a footer at the new end (space nothing uses), flush, and
 * the file truncated after it: until the truncate the old footer is still the last sector.
 */
export async function closeUp(file: VhdFile, map: VhdMap): Promise<void> {
  const d = file.dyn!;
  const stride = d.bitmapBytes + d.blockSize;
  const metaEnd = map.metadataEnd();
  const blocks: { b: number; at: number }[] = [];
  for (let b = 0; b < d.bat.length; b++) if (d.bat[b] !== BAT_UNUSED) blocks.push({ b, at: d.bat[b]! * SECTOR });
  blocks.sort((x, y) => x.at - y.at);
  const buf = Buffer.alloc(stride);
  for (;;) {
    const top = blocks[blocks.length - 1];
    if (!top) break;
    // the lowest gap below the top block that holds a whole block
    let target = -1;
    let prevEnd = metaEnd;
    for (let i = 0; i < blocks.length; i++) {
      if (blocks[i]!.at - prevEnd >= stride) {
        target = prevEnd;
        break;
      }
      prevEnd = Math.max(prevEnd, blocks[i]!.at + stride);
    }
    if (target < 0 || target >= top.at) break;
    await file.store.readInto(buf, top.at);
    await file.store.write(target, buf);
    await file.store.flush();
    d.bat[top.b] = target / SECTOR;
    await map.writeBatEntries([top.b]);
    await file.store.flush();
    blocks.pop();
    top.at = target;
    blocks.splice(blocks.findIndex((x) => x.at > target) < 0 ? blocks.length : blocks.findIndex((x) => x.at > target), 0, top);
  }
  const last = blocks[blocks.length - 1];
  await cutAfter(file, roundUp(Math.max(metaEnd, last ? last.at + stride : 0), SECTOR), d);
}
