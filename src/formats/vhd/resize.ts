/**
 * Resize in place (NOTES.md "Resize"): fixed and dynamic images grow and shrink; the footer
 * is the switch.
 */
import { DiskError } from '../../core/errors.js';
import { ceilDiv, roundUp } from '../../core/ints.js';
import { BAT_UNUSED, FOOTER_SIZE, MAX_BAT_ENTRIES, MAX_VHD_BYTES, SECTOR, encodeFooter, exactSizeGeometry, type FooterValue } from './structs.js';
import type { VhdMap } from './map.js';
import { closeUp } from './compact.js';
import { checkWritable, saveFooter, saveHeader, typeOf, type VhdFile } from './state.js';

/**
 * Resize in place (NOTES.md "Resize"); closes the image. What makes the new size visible is
 * the footer (the last sector of the file, then its copy at 0): everything before it leaves
 * a disk of the old size that reads as before.
 * - Fixed grow: the old footer written again at the new end (still the old disk), the sector
 *   it held zeroed, flush, then the new footer over the copy at the new end.
 * - Fixed shrink: the new footer over the old one at the end of the file (the switch: the
 *   data stays at 0), flush, then the footer again at the new end, flush, and the cut.
 * - Dynamic grow: blocks in the way of a larger BAT moved to the end of the file (footer at
 *   the new end, copy, flush, BAT entry, flush), the new BAT entries unused, flush, the
 *   dynamic header's maxTableEntries, flush, then the footers.
 * - Dynamic shrink: the footers first, then the BAT entries past the new end unused, flush,
 *   then the close-up (the relayout engine, as after a discard) moves the highest blocks into
 *   the freed slots and cuts the file.
 */
export async function resizeVhd(file: VhdFile, map: VhdMap, newCapacity: number): Promise<void> {
  checkWritable(file);
  if (typeOf(file) === 'differencing') throw new DiskError('NOTSUPPORTED', 'a differencing VHD keeps its parent\'s size: resize the base and create the child again', { path: file.path, field: 'diskType', found: typeOf(file) });
  if (newCapacity <= 0 || newCapacity % SECTOR !== 0 || newCapacity > MAX_VHD_BYTES) {
    throw new DiskError('INVAL', 'a VHD size is a whole number of sectors up to 2040 GiB', { path: file.path, field: 'currentSize', expected: `512..${MAX_VHD_BYTES}`, found: newCapacity });
  }
  const g = exactSizeGeometry(newCapacity);
  // originalSize too: libvhdi reports it as the media size
  const next: FooterValue = { ...file.footer, originalSize: BigInt(newCapacity), currentSize: BigInt(newCapacity), cylinders: g.cylinders, heads: g.heads, sectorsPerTrack: g.sectors };
  const bytes = encodeFooter(next);
  if (!file.dyn) await resizeFixed(file, newCapacity, bytes);
  else await resizeDynamic(file, map, newCapacity, next);
  await file.store.flush();
}

async function resizeFixed(file: VhdFile, newCapacity: number, bytes: Buffer): Promise<void> {
  const old = file.capacity;
  await cutFixedSlack(file, old, file.footerBytes);
  if (newCapacity > old) {
    await file.store.write(newCapacity, file.footerBytes);
    await file.store.flush();
    await file.store.write(old, Buffer.alloc(SECTOR));
    await file.store.flush();
    await file.store.write(newCapacity, bytes);
  } else {
    // the switch: the new footer over the old one, in place (one sector). Every reader takes
    // the size from the footer at the end and the data from offset 0, so from here the disk
    // is the new one; the bytes after it up to the footer are slack (a leak)
    await file.store.write(file.fileSize - FOOTER_SIZE, bytes);
    await file.store.flush();
    await cutFixedSlack(file, newCapacity, bytes);
  }
}

/**
 * A fixed image whose file is longer than its data area plus the footer (a shrink killed
 * after its switch): the footer written again right after the data (inside the slack:
 * nothing reads it), flush, then the file cut after it. Until the cut the footer at the end
 * is still the last sector, so every moment is the same disk.
 */
export async function cutFixedSlack(file: VhdFile, at: number, footer: Buffer): Promise<void> {
  if (file.fileSize - FOOTER_SIZE <= at) return;
  await file.store.write(at, footer);
  await file.store.flush();
  await file.store.truncate(at + FOOTER_SIZE);
  await file.store.flush();
  file.fileSize = at + FOOTER_SIZE;
}

async function resizeDynamic(file: VhdFile, map: VhdMap, newCapacity: number, next: FooterValue): Promise<void> {
  const d = file.dyn!;
  // a stored block that holds the end keeps bytes past it: zeros there while they lie past
  // the end (grow: the old end, before the switch; shrink: the new end, after it), so that
  // they cannot reappear when the disk grows again and a stop shows the old or the new disk
  // (QEMU ignores the sector bitmaps: the data itself must be zeros)
  const zeroPastEnd = async (end: number) => {
    const within = end % d.blockSize;
    const last = d.bat[Math.floor(end / d.blockSize)];
    if (within === 0 || last === undefined || last === BAT_UNUSED) return;
    const z = Buffer.alloc(Math.min(d.blockSize - within, 1024 * 1024));
    const at = last * SECTOR + d.bitmapBytes + within;
    for (let done = 0; done < d.blockSize - within; done += z.length) await file.store.write(at + done, z.subarray(0, Math.min(z.length, d.blockSize - within - done)));
    await file.store.flush();
  };
  const oldNeed = d.bat.length;
  const need = ceilDiv(newCapacity, d.blockSize);
  if (need > MAX_BAT_ENTRIES) throw new DiskError('INVAL', 'the BAT would be too large', { path: file.path, field: 'maxTableEntries', expected: `<= ${MAX_BAT_ENTRIES}`, found: need });
  if (newCapacity < file.capacity) {
    // the footer is the switch; what lies past the new end is invisible after it
    await saveFooter(file, next);
    await file.store.flush();
    await zeroPastEnd(newCapacity);
    if (need < oldNeed) {
      await file.store.write(d.tableOffset + need * 4, Buffer.alloc((oldNeed - need) * 4, 0xff));
      await file.store.flush();
      // the blocks past the new end are unused now: close the data area up and cut the file,
      // as a discard does, so the shrink gives their space back instead of leaving a leak
      d.bat.fill(BAT_UNUSED, need);
      map.clearCache();
      await closeUp(file, map);
    }
    return;
  }
  await zeroPastEnd(file.capacity);
  const stride = d.bitmapBytes + d.blockSize;
  let entries = d.entries;
  if (need > entries) {
    entries = roundUp(need * 4, SECTOR) / 4;
    const batEnd = d.tableOffset + entries * 4;
    if (d.headerOffset > d.tableOffset && d.headerOffset < batEnd) {
      throw new DiskError('NOTSUPPORTED', 'the dynamic header lies where a larger BAT must go', { path: file.path, struct: 'dynamicHeader', field: 'tableOffset', found: d.tableOffset });
    }
    // blocks in the way go to the end of the file, lowest first (as a new block is written)
    const inWay: number[] = [];
    for (let b = 0; b < oldNeed; b++) {
      const at = d.bat[b]!;
      if (at !== BAT_UNUSED && at * SECTOR < batEnd) inWay.push(b);
    }
    const buf = Buffer.alloc(stride);
    for (const b of inWay) {
      const from = d.bat[b]! * SECTOR;
      const to = Math.max(d.nextFree, roundUp(batEnd, SECTOR));
      await file.store.readInto(buf, from);
      await file.store.write(to + stride, file.footerBytes);
      await file.store.write(to, buf);
      await file.store.flush();
      d.bat[b] = to / SECTOR;
      await map.writeBatEntries([b]);
      await file.store.flush();
      d.nextFree = to + stride;
      file.fileSize = d.nextFree + FOOTER_SIZE;
    }
    if (batEnd > d.nextFree) {
      // the BAT reaches past the last block: a footer after it first (the file must end in one)
      await file.store.write(batEnd, file.footerBytes);
      await file.store.flush();
      d.nextFree = batEnd;
      file.fileSize = batEnd + FOOTER_SIZE;
    }
  }
  // the new entries unused (a shrunk disk may have left old block addresses there)
  await file.store.write(d.tableOffset + oldNeed * 4, Buffer.alloc((entries - oldNeed) * 4, 0xff));
  await file.store.flush();
  if (entries !== d.entries) {
    await saveHeader(file, { ...file.header!, maxTableEntries: entries });
    await file.store.flush();
  }
  await saveFooter(file, next);
}
