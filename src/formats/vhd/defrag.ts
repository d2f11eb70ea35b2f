/**
 * Defragment: blocks back to back in virtual order after the metadata (NOTES.md "Defragment").
 */
import { DiskError } from '../../core/errors.js';
import { roundUp } from '../../core/ints.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { BAT_UNUSED, FOOTER_SIZE, HEADER_SIZE, SECTOR } from './structs.js';
import type { Region } from './layout.js';
import type { VhdMap } from './map.js';
import { cutAfter } from './compact.js';
import { checkWritable, type VhdFile } from './state.js';

/**
 * Defragment (NOTES.md "Defragment"): blocks (bitmap + data) in BAT order by virtual index,
 * back to back from the end of the dynamic header and the BAT (around parent locator data
 * that lies in the way), the file cut behind a footer after the last one. Target by target,
 * from the lowest: whatever block overlaps the target (another block, or the right one at a
 * position that is not exactly the target) is first moved out of the way into a free slot
 * past the final area (a grid of whole blocks from there, used blocks and locator data
 * avoided; past the end of the file a new block is appended as allocate does, the footer at
 * the new end first), then the right block is copied in, and every block whose target
 * that uncovers follows at once (a cycle walk: few blocks parked at a time). Every move: copy, flush, BAT entry,
 * flush, so a BAT entry always names a complete block and space is written only when no entry
 * names it. The end is closeUp's: a footer after the last block (space nothing uses), flush,
 * then the truncate. A kill leaves gaps (check: leaks) and at most a stray footer copy inside
 * unused space; the file always ends with a valid footer. Fixed images: NOTSUPPORTED (their
 * data is the disk in order).
 */
export async function defragment(file: VhdFile, map: VhdMap, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  checkWritable(file);
  await map.commitPending();
  const d = file.dyn;
  if (!d) throw new DiskError('NOTSUPPORTED', 'a fixed VHD cannot be defragmented (its data is the disk, in order)', { path: file.path, field: 'diskType', found: 'fixed' });
  const fileBytesBefore = await file.store.size();
  const stride = d.bitmapBytes + d.blockSize;
  const headEnd = roundUp(Math.max(SECTOR, d.headerOffset + HEADER_SIZE, d.tableOffset + d.entries * 4), SECTOR);
  const fixed: Region[] = map.fixedRegions();
  const metaEnd = fixed.reduce((m, r) => Math.max(m, r.end), headEnd);
  const hitsFixed = (at: number) => fixed.find((r) => r.start < at + stride && at < r.end);

  const order: number[] = [];
  for (let b = 0; b < d.bat.length; b++) if (d.bat[b] !== BAT_UNUSED) order.push(b);
  const n = order.length;
  const targets: number[] = [];
  let cursor = headEnd;
  for (let r = 0; r < n; r++) {
    for (let f = hitsFixed(cursor); f; f = hitsFixed(cursor)) cursor = roundUp(f.end, SECTOR);
    targets.push(cursor);
    cursor += stride;
  }
  const finalEnd = cursor;

  // blocks at their places when we started, by position; `gone` once a block left its place
  const orig = order.map((b) => ({ b, at: d.bat[b]! * SECTOR })).sort((x, y) => x.at - y.at);
  const gone = new Set<number>();
  /** the blocks that still sit at their starting place and overlap [at, at + stride) */
  const origOver = (at: number): number[] => {
    let lo = 0;
    let hi = orig.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (orig[mid]!.at + stride <= at) lo = mid + 1;
      else hi = mid;
    }
    const out: number[] = [];
    for (let i = lo; i < orig.length && orig[i]!.at < at + stride; i++) if (!gone.has(orig[i]!.b)) out.push(orig[i]!.b);
    return out;
  };
  // the spare grid past the final area: slot k at finalEnd + k * stride
  const parked = new Map<number, number>(); // slot -> block
  const slotOf = new Map<number, number>(); // block -> slot
  let spareFrom = 0;
  const freeSlot = (): number => {
    for (let k = spareFrom; ; k++) {
      const at = finalEnd + k * stride;
      if (parked.has(k) || hitsFixed(at) || origOver(at).length > 0) continue;
      spareFrom = k + 1;
      return k;
    }
  };
  /** b leaves where it is; its starting place when that is what it leaves */
  const release = (b: number): number | undefined => {
    const k = slotOf.get(b);
    if (k !== undefined) {
      parked.delete(k);
      slotOf.delete(b);
      spareFrom = Math.min(spareFrom, k);
    } else if (!gone.has(b)) {
      const at = d.bat[b]! * SECTOR;
      gone.add(b);
      if (at + stride > finalEnd) spareFrom = Math.min(spareFrom, Math.max(0, Math.floor((at - finalEnd) / stride)));
      return at;
    }
    return undefined;
  };
  const buf = Buffer.alloc(stride);
  let moved = 0;
  const move = async (b: number, to: number) => {
    if (to + stride > file.fileSize - FOOTER_SIZE) {
      // past the footer: it goes to the new end first, as for a new block
      await file.store.write(to + stride, file.footerBytes);
      file.fileSize = to + stride + FOOTER_SIZE;
    }
    await file.store.readInto(buf, d.bat[b]! * SECTOR);
    await file.store.write(to, buf);
    await file.store.flush();
    d.bat[b] = to / SECTOR;
    await map.writeBatEntries([b]);
    await file.store.flush();
    moved++;
  };

  /**
   * b to its target; then every block whose target the space b left uncovers goes to its
   * target too, and so on: on an aligned layout this walks a permutation cycle, so at most
   * one block is parked at a time (the file grows by one block, not by half the blocks)
   */
  const place = async (b: number, t: number) => {
    const left: number[] = [];
    const leave = (v: number) => {
      const at = release(v);
      if (at !== undefined) left.push(at);
    };
    leave(b);
    await move(b, t);
    while (left.length > 0) {
      const at = left.pop()!;
      let r = 0;
      for (let hi = n; r < hi; ) {
        const mid = (r + hi) >> 1;
        if (targets[mid]! + stride <= at) r = mid + 1;
        else hi = mid;
      }
      for (; r < n && targets[r]! < at + stride; r++) {
        const v = order[r]!;
        if (d.bat[v]! * SECTOR === targets[r] || origOver(targets[r]!).length > 0) continue;
        leave(v);
        await move(v, targets[r]!);
      }
    }
  };

  opts.onProgress?.(0, n);
  let cancelled = false;
  for (let r = 0; r < n; r++) {
    const b = order[r]!;
    const t = targets[r]!;
    if (d.bat[b]! * SECTOR !== t) {
      if (opts.signal?.aborted) {
        cancelled = true;
        break;
      }
      for (const o of origOver(t)) {
        const k = freeSlot();
        const to = finalEnd + k * stride;
        if (to / SECTOR >= BAT_UNUSED) throw new DiskError('NOSPACE', 'no room to move a block out of the way: blocks cannot start beyond sector 2^32-1', { path: file.path, field: 'BAT' });
        release(o);
        await move(o, to);
        parked.set(k, o);
        slotOf.set(o, k);
      }
      await place(b, t);
    }
    opts.onProgress?.(r + 1, n);
  }
  if (!cancelled) await cutAfter(file, roundUp(Math.max(metaEnd, finalEnd), SECTOR), d);
  else d.nextFree = roundUp(file.fileSize - FOOTER_SIZE, SECTOR);
  if (cancelled) throw new DiskError('CANCELLED', undefined, { path: file.path }, { cause: opts.signal!.reason });
  return { fileBytesBefore, fileBytesAfter: await file.store.size(), moved };
}
