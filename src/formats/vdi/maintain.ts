/**
 * Compact and defragment in place (NOTES.md "Compact and discard", "Defragment"); both keep
 * the data area dense and every entry pointing at a complete copy.
 */
import { DiskError } from '../../core/errors.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { isZero } from '../../binary/zeros.js';
import { BLOCK_ZERO, TYPE_FIXED } from './structs.js';
import type { VdiMap } from './map.js';
import { checkWritable, type VdiFile } from './state.js';

/**
 * Drop every allocated block that reads as zeros, close up the data area and cut the file.
 * Fixed images have no spare blocks to give back (NOTSUPPORTED, as in VirtualBox).
 */
export async function compact(file: VdiFile, alloc: VdiMap, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  checkWritable(file);
  if (file.h.type === TYPE_FIXED) throw new DiskError('NOTSUPPORTED', 'a fixed VDI image cannot be compacted', { path: file.path, struct: 'VdiHeader', field: 'type', found: 'fixed' });
  const fileBytesBefore = await file.store.size();
  const buf = Buffer.alloc(file.h.cbBlock);
  const zero: number[] = [];
  for (let b = 0; b < file.map.length; b++) {
    if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: file.path }, { cause: opts.signal.reason });
    const e = file.map[b]!;
    if (e < BLOCK_ZERO) {
      await file.store.readInto(buf, alloc.fileOffset(e, 0));
      if (isZero(buf)) zero.push(b);
    }
    opts.onProgress?.(b + 1, file.map.length);
  }
  // the entries change but not what the disk reads: uuidModify stays (children stay valid)
  await alloc.dropBlocks(zero);
  return { fileBytesBefore, fileBytesAfter: await file.store.size() };
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
  const owner = new Int32Array(n);
  for (const b of order) owner[file.map[b]!] = b;
  const inOrder = order.every((b, r) => file.map[b] === r);
  if (!inOrder && n >= file.h.cBlocks) {
    throw new DiskError('NOTSUPPORTED', 'every block of this image is allocated: no spare block index for a crash-safe move (convert the image instead)', { ...where, field: 'cBlocksAllocated', found: n, expected: `< ${file.h.cBlocks}` });
  }
  const scratch = n;
  const buf = Buffer.alloc(file.stride);
  let moved = 0;
  const move = async (v: number, to: number) => {
    await file.store.readInto(buf, file.h.offData + file.map[v]! * file.stride);
    await file.store.write(file.h.offData + to * file.stride, buf);
    await file.store.flush();
    file.map[v] = to;
    await alloc.writeMapSpan(v, v + 1);
    await file.store.flush();
    moved++;
  };
  opts.onProgress?.(0, n);
  let cancelled = false;
  for (let s = 0; s < n; s++) {
    if (owner[s] !== order[s]) {
      // between cycles the scratch slot is free: the only safe place to stop
      if (opts.signal?.aborted) {
        cancelled = true;
        break;
      }
      const first = owner[s]!;
      await move(first, scratch);
      for (let hole = s; ; ) {
        const v = order[hole]!;
        const from = file.map[v]!;
        await move(v, hole);
        owner[hole] = v;
        if (v === first) break;
        hole = from;
      }
    }
    opts.onProgress?.(s + 1, n);
  }
  const end = file.h.offData + n * file.stride;
  if ((await file.store.size()) > end) {
    await file.store.truncate(end);
    await file.store.flush();
  }
  if (cancelled) throw new DiskError('CANCELLED', undefined, { path: file.path }, { cause: opts.signal!.reason });
  return { fileBytesBefore, fileBytesAfter: await file.store.size(), moved };
}
