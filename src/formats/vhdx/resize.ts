/**
 * VHDX resize in place (NOTES.md "Resize"): the Virtual Disk Size item is the switch; a BAT
 * that outgrows its region moves to the end of the file first (growBatRegion, also used when a
 * dynamic image becomes differencing).
 */
import { DiskError } from '../../core/errors.js';
import { roundUp } from '../../core/ints.js';
import {
  ALIGN,
  GUIDS,
  LOG_SECTOR,
  MAX_BAT_ENTRIES,
  MAX_VIRTUAL_SIZE,
  MiB,
  PAYLOAD,
  REGION_TABLE_OFFSETS,
  REGION_TABLE_SIZE,
  batEntry,
  batEntryCount,
  payloadIndex,
} from './structs.js';
import { BAT_READ_CHUNK, encodeRegionTable } from './layout.js';
import type { VhdxState } from './state.js';
import { metadataSectors } from './metadata.js';

/**
 * Resize in place (NOTES.md "Resize"); closes the image. The Virtual Disk Size metadata item,
 * committed through the log in an entry of its own, is the switch. Grow: a fixed image's new
 * payload blocks allocated (the file extended: zeros), then the new BAT entries (NOT_PRESENT,
 * or FULLY_PRESENT at those blocks) committed, then the size. Shrink: the size first, then the
 * entries past the end NOT_PRESENT (their space is left as a leak). Entries past the end are
 * invisible to the disk, so every stop leaves the old disk or the new one; the log makes each
 * commit whole. A BAT that outgrows its region moves first (growBatRegion).
 */
export async function resize(state: VhdxState, newCapacity: number): Promise<void> {
  try {
    state.checkWritable();
    const where = { path: state.path, struct: 'metadata', field: 'virtualDiskSize', found: newCapacity };
    if (state.params.hasParent) throw new DiskError('NOTSUPPORTED', 'a differencing VHDX keeps its parent\'s size: resize the base and create the child again', { ...where, field: 'hasParent', found: true });
    const ls = state.params.logicalSectorSize;
    if (newCapacity <= 0 || newCapacity % ls !== 0 || newCapacity > MAX_VIRTUAL_SIZE) throw new DiskError('INVAL', `a VHDX size is a multiple of the ${ls}-byte logical sector up to 64 TiB`, { ...where, expected: `${ls}..${MAX_VIRTUAL_SIZE}` });
    const bs = state.params.blockSize;
    const oldBlocks = state.blocks;
    const newBlocks = Math.ceil(newCapacity / bs);
    const oldEntries = batEntryCount(oldBlocks, state.cr, false);
    const newEntries = batEntryCount(newBlocks, state.cr, false);
    if (newEntries * 8 > state.bat.length) await growBatRegion(state, newEntries);
    const it = state.items.find((x) => x.id === GUIDS.VIRTUAL_DISK_SIZE)!;
    const size = Buffer.alloc(8);
    size.writeBigUInt64LE(BigInt(newCapacity));
    const sizeSectors = await metadataSectors(state, [{ at: it.offset, data: size }]);
    await state.commit();
    if (newCapacity > state.capacity) {
      for (let i = oldEntries; i < newEntries; i++) state.pending.set(i, batEntry(PAYLOAD.NOT_PRESENT, 0));
      const newLen = (n: number) => Math.min(bs, newCapacity - n * bs);
      let at = state.nextFree;
      let end = state.fileSize;
      // a stored partial last block may have only its old length of file space (the next
      // block, or the end of the file, follows it): a full-size copy at the end of the file
      const oldLast = oldBlocks - 1;
      if (state.blockLen(oldLast) < bs && state.pState[oldLast] === PAYLOAD.FULLY_PRESENT) {
        await state.store.write(at, await state.store.read(state.pOff[oldLast]! * MiB, state.blockLen(oldLast)));
        state.pending.set(payloadIndex(oldLast, state.cr), batEntry(PAYLOAD.FULLY_PRESENT, at / MiB));
        // a whole block (MS-VHDX), except as the end of a fixed file, which create ends at
        // the disk's end as QEMU does
        end = Math.max(end, at + (state.fixed ? roundUp(newLen(oldLast), MiB) : bs));
        at += bs;
      }
      if (state.params.leaveBlocksAllocated) {
        for (let n = oldBlocks; n < newBlocks; n++) {
          state.pending.set(payloadIndex(n, state.cr), batEntry(PAYLOAD.FULLY_PRESENT, at / MiB));
          end = Math.max(end, at + roundUp(newLen(n), MiB));
          at += bs;
        }
      }
      if (end > state.fileSize) {
        await state.store.truncate(end);
        state.fileSize = end;
      }
      state.nextFree = at;
      await state.commit();
      await state.commit(sizeSectors);
    } else {
      // the cut-off tail of the new last block reads as zeros should the disk grow again;
      // written after the size switch, when it lies past the end (a stop before it shows the
      // old disk whole)
      const last = newBlocks - 1;
      const within = newCapacity - last * bs;
      const st = state.pState[last]!;
      const tail = state.blockLen(last) - within;
      await state.commit(sizeSectors);
      if (tail > 0 && (st === PAYLOAD.FULLY_PRESENT || st === PAYLOAD.PARTIALLY_PRESENT)) {
        await state.zeroFill(state.pOff[last]! * MiB + within, tail);
        await state.store.flush();
      }
      for (let i = newEntries; i < oldEntries; i++) state.pending.set(i, batEntry(PAYLOAD.NOT_PRESENT, 0));
      await state.commit();
    }
  } finally {
    await state.close();
  }
}

/**
 * A BAT region too small for `entries` (grow, or a dynamic image becoming differencing) is
 * replaced by a larger one at the end of the file, as Hyper-V does: 1. the new region (1 MiB
 * multiple) gets the committed BAT copied in and zeros (NOT_PRESENT) after it, flush; nothing
 * points at it yet, so a stop here leaves a trailing leak; 2. both region tables, rewritten
 * with the BAT entry's new offset and length, go through the log in one entry: the switch. A
 * stop after the log entry is replayed by the next read-write open (and read through by a
 * read-only one); both BATs hold the same entries until the switch. The old region is left
 * unused (free space inside the file; compact does not reuse it).
 */
export async function growBatRegion(state: VhdxState, entries: number): Promise<void> {
  if (entries > MAX_BAT_ENTRIES) {
    throw new DiskError('NOTSUPPORTED', 'the BAT would have more entries than vdkit holds in memory (use a larger block size)', { path: state.path, struct: 'regionTable', field: 'BAT.length', expected: `<= ${MAX_BAT_ENTRIES * 8}`, found: entries * 8 });
  }
  await state.commit();
  const old = state.bat;
  const length = roundUp(entries * 8, ALIGN);
  const at = state.nextFree;
  if (at + length > state.fileSize) {
    await state.store.truncate(at + length);
    state.fileSize = at + length;
  }
  const chunk = Buffer.alloc(Math.min(old.length, BAT_READ_CHUNK));
  for (let done = 0; done < old.length; done += chunk.length) {
    const part = chunk.subarray(0, Math.min(chunk.length, old.length - done));
    await state.store.readInto(part, old.offset + done);
    await state.store.write(at + done, part);
  }
  await state.store.flush();
  const regions = state.regions.map((r) => (r === old ? { ...r, offset: at, length } : r));
  const table = encodeRegionTable(await state.store.read(REGION_TABLE_OFFSETS[0]!, REGION_TABLE_SIZE), regions);
  const sectors = new Map<number, Buffer>();
  const used = Math.ceil((16 + regions.length * 32) / LOG_SECTOR);
  for (const copy of REGION_TABLE_OFFSETS) for (let s = 0; s < used; s++) sectors.set(copy + s * LOG_SECTOR, Buffer.from(table.subarray(s * LOG_SECTOR, (s + 1) * LOG_SECTOR)));
  // the rest of each 64 KiB table is covered by the checksum: it must match copy 1's bytes
  const rest = table.subarray(used * LOG_SECTOR);
  if (!rest.equals((await state.store.read(REGION_TABLE_OFFSETS[1]! + used * LOG_SECTOR, rest.length)))) {
    for (let s = used; s < REGION_TABLE_SIZE / LOG_SECTOR; s++) sectors.set(REGION_TABLE_OFFSETS[1]! + s * LOG_SECTOR, Buffer.from(table.subarray(s * LOG_SECTOR, (s + 1) * LOG_SECTOR)));
  }
  await state.commit(sectors);
  state.regions = regions;
  state.bat = regions.find((r) => r.guid === GUIDS.BAT_REGION)!;
  state.nextFree = at + length;
}
