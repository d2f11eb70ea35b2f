/**
 * Resize in place (NOTES.md "Resize"): the header is the switch, written last.
 */
import { DiskError } from '../../core/errors.js';
import { ceilDiv } from '../../core/ints.js';
import { u32Bytes } from '../../binary/tables.js';
import { BLOCK_FREE, BLOCK_ZERO, SECTOR, TYPE_DIFF, TYPE_FIXED } from './structs.js';
import { MAX_BLOCKS, MAX_DISK_BYTES } from './layout.js';
import type { VdiMap } from './map.js';
import { checkWritable, writeHeader, type VdiFile } from './state.js';

/**
 * Resize in place (NOTES.md "Resize"); the caller (VdiImage.maintenance().resize) closes the image. The header (cbDisk, cBlocks,
 * cBlocksAllocated: one sector) is the switch and is written last, so a killed resize leaves
 * the old disk or the new one.
 * - Grow: the new map entries first (FREE; a fixed image gets zeroed blocks at the end of the
 *   data area first, then entries naming them), flush, then the header. A map that no longer
 *   fits before offData moves into the start of the data area first (relocateMap).
 * - Shrink: the blocks past the new end dropped first (the data area closed up as a discard
 *   does; a fixed image needs them in the last slots already), then the header, then the file
 *   cut after the last block.
 */
export async function resizeVdi(file: VdiFile, alloc: VdiMap, newCapacity: number): Promise<void> {
  checkWritable(file);
  const where = { path: file.path, struct: 'VdiHeader', field: 'cbDisk', found: newCapacity };
  if (file.h.type === TYPE_DIFF) throw new DiskError('NOTSUPPORTED', 'a differencing VDI keeps its parent\'s size: resize the base and create the child again', { ...where, field: 'type', found: 'differencing' });
  if (newCapacity <= 0 || newCapacity % SECTOR !== 0 || newCapacity > MAX_DISK_BYTES) throw new DiskError('INVAL', 'a VDI size is a whole number of sectors up to 4 PiB - 3 MiB', { ...where, expected: `512..${MAX_DISK_BYTES}` });
  const oldC = file.h.cBlocks;
  const newC = ceilDiv(newCapacity, file.h.cbBlock);
  if (newC > MAX_BLOCKS) throw new DiskError('INVAL', 'too many blocks', { ...where, field: 'cBlocks', expected: `<= ${MAX_BLOCKS}`, found: newC });
  const fixed = file.h.type === TYPE_FIXED;
  // a stored block that holds the end keeps bytes past it: zeros there while they lie past
  // the end (grow: the old end, before the switch; shrink: the new end, after it), so that
  // they cannot reappear when the disk grows again, and a stop shows the old or new disk
  const shrinking = newCapacity < file.capacity;
  if (!shrinking) await zeroPastEnd(file, alloc, file.capacity);
  if (newC > oldC) {
    if (file.h.offBlocks + newC * 4 > file.h.offData) {
      await relocateMap(file, alloc, newC, newCapacity);
      return;
    }
    const add = newC - oldC;
    const ext = new Uint32Array(add).fill(BLOCK_FREE);
    if (fixed) {
      const n = file.nextIndex;
      const end = file.h.offData + n * file.stride;
      // bytes past the data area are a leak nothing names: cut them so the new blocks read zeros
      if ((await file.store.size()) > end) await file.store.truncate(end);
      await file.store.truncate(end + add * file.stride);
      await file.store.flush();
      for (let i = 0; i < add; i++) ext[i] = n + i;
      file.h.cBlocksAllocated = n + add;
    }
    await file.store.write(file.h.offBlocks + oldC * 4, u32Bytes(ext, 0, add));
    await file.store.flush();
  } else if (newC < oldC) {
    if (fixed) {
      for (let i = 0; i < oldC; i++) {
        if ((i < newC) !== (file.map[i]! < newC)) throw new DiskError('NOTSUPPORTED', 'the blocks of this fixed image past the new end are not its last ones: convert it to shrink', { ...where, field: `blockMap[${i}]`, found: file.map[i] });
      }
      file.h.cBlocksAllocated = newC;
    } else {
      // the entries past the new end leave the map with the header write below (the switch:
      // size, block count and allocated count in one sector); their slots become holes
      // that dropBlocks closes after it
      for (let i = newC; i < oldC; i++) file.map[i] = BLOCK_FREE;
      let allocated = 0;
      for (let i = 0; i < newC; i++) if (file.map[i]! < BLOCK_ZERO) allocated++;
      file.h.cBlocksAllocated = allocated;
    }
  }
  file.h.cbDisk = BigInt(newCapacity);
  file.h.cBlocks = newC;
  await writeHeader(file);
  await file.store.flush();
  if (shrinking) await zeroPastEnd(file, alloc, newCapacity);
  if (newC < oldC) {
    if (fixed) {
      await file.store.truncate(file.h.offData + file.h.cBlocksAllocated * file.stride);
      await file.store.flush();
    } else {
      await alloc.dropBlocks([]);
    }
  }
}

/**
 * Grow past the room before offData: the first k data blocks (k * stride >= the new map)
 * are copied after the last one, flush, their entries pointed at the copies, flush (the old
 * layout now has holes at its start: a leak, cBlocksAllocated still the count of entries);
 * the new map, every index minus k, written over those first k slots, flush; then one header
 * write moves offBlocks there and offData k blocks on. The copies must keep indices below the
 * old cBlocks (QEMU and vdkit call a larger entry corruption), so a full image (every fixed
 * one) cannot do it: NOTSUPPORTED.
 */
async function relocateMap(file: VdiFile, alloc: VdiMap, newC: number, newCapacity: number): Promise<void> {
  const h = file.h;
  const oldC = h.cBlocks;
  const n = file.nextIndex;
  const k = Math.max(1, ceilDiv(newC * 4, file.stride));
  const moving = Math.min(k, n);
  const base = Math.max(n, k);
  if (h.type === TYPE_FIXED || (moving > 0 && base + moving > oldC)) {
    throw new DiskError('NOTSUPPORTED', 'the larger block map does not fit before the data area, and the data blocks in its way cannot move (the image is full or fixed): convert it to resize', { path: file.path, struct: 'VdiHeader', field: 'offData', expected: `>= ${h.offBlocks + newC * 4}`, found: h.offData });
  }
  const owner = new Map<number, number>();
  for (let b = 0; b < oldC; b++) if (file.map[b]! < moving) owner.set(file.map[b]!, b);
  const buf = Buffer.alloc(file.stride);
  for (let i = 0; i < moving; i++) {
    await file.store.readInto(buf, h.offData + i * file.stride);
    await file.store.write(h.offData + (base + i) * file.stride, buf);
  }
  await file.store.flush();
  if (owner.size > 0) {
    for (const [i, b] of owner) file.map[b] = base + i;
    await alloc.writeMapEntries([...owner.values()]);
    await file.store.flush();
  }
  const next = new Uint32Array(newC).fill(BLOCK_FREE);
  for (let b = 0; b < oldC; b++) {
    const e = file.map[b]!;
    next[b] = e < BLOCK_ZERO ? e - k : e;
  }
  const offBlocks = h.offData;
  await file.store.write(offBlocks, u32Bytes(next, 0, newC));
  await file.store.flush();
  h.offBlocks = offBlocks;
  h.offData = offBlocks + k * file.stride;
  h.cbDisk = BigInt(newCapacity);
  h.cBlocks = newC;
  await writeHeader(file);
  await file.store.flush();
}

/** zeros from `end` to the end of its block when that block is stored here, flushed */
async function zeroPastEnd(file: VdiFile, alloc: VdiMap, end: number): Promise<void> {
  const bs = file.h.cbBlock;
  const within = end % bs;
  if (within === 0) return;
  const e = file.map[Math.floor(end / bs)];
  if (e === undefined || e >= BLOCK_ZERO) return;
  await alloc.writeZeros(alloc.fileOffset(e, within), bs - within);
  await file.store.flush();
}
