/**
 * VHDX compact and close-up (NOTES.md "Compact"): blocks that read as zeros dropped, then the
 * highest blocks moved into the lowest free gaps, each batch copied, flushed and switched
 * through the log, and the file cut after the last block (cutAt, shared with defragment).
 */
import { DiskError } from '../../core/errors.js';
import { roundUp } from '../../core/ints.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { isZero } from '../../binary/zeros.js';
import { ALIGN, BITMAP_BLOCK_SIZE, MiB, PAYLOAD } from './structs.js';
import { allocationMap, type VhdxEntry } from './map.js';
import type { VhdxState } from './state.js';

/**
 * Drop FULLY_PRESENT blocks that read as zeros (NOT_PRESENT in a base, ZERO in a differencing
 * image) and PARTIALLY_PRESENT blocks with no sector stored (NOT_PRESENT: the parent either
 * way), commit, then close up and cut the file. The DataWriteGuid stays: the content does
 * not change, so children stay linked. Fixed images: NOTSUPPORTED.
 */
export async function compact(state: VhdxState, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  state.checkWritable();
  if (state.fixed) throw new DiskError('NOTSUPPORTED', 'a fixed VHDX cannot be compacted', { path: state.path, field: 'leaveBlocksAllocated', found: 'fixed' });
  await state.commit();
  const fileBytesBefore = await state.store.size();
  const diff = state.params.hasParent;
  const buf = Buffer.alloc(state.params.blockSize);
  for (let n = 0; n < state.blocks; n++) {
    if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: state.path }, { cause: opts.signal.reason });
    const st = state.pState[n];
    if (st === PAYLOAD.FULLY_PRESENT) {
      const b = buf.subarray(0, state.blockLen(n));
      await state.store.readInto(b, state.pOff[n]! * MiB);
      if (isZero(b)) state.setPayload(n, diff ? PAYLOAD.ZERO : PAYLOAD.NOT_PRESENT, 0);
    } else if (st === PAYLOAD.PARTIALLY_PRESENT) {
      if (isZero(await state.bitmap(n))) {
        state.setPayload(n, PAYLOAD.NOT_PRESENT, 0);
        state.bitmaps.delete(n);
      }
    }
    opts.onProgress?.(n + 1, state.blocks);
  }
  await state.commit();
  await closeUp(state);
  return { fileBytesBefore, fileBytesAfter: await state.store.size() };
}

/**
 * The file cut at `end` (1 MiB aligned, after every block and structure in use): the log is
 * marked empty first (its entries may name offsets past the new end), then the truncate; new
 * blocks go from there.
 */
export async function cutAt(state: VhdxState, end: number): Promise<void> {
  if (end < state.fileSize) {
    await state.emptyLog();
    await state.store.truncate(end);
    await state.store.flush();
    state.fileSize = end;
  }
  state.nextFree = roundUp(Math.max(state.fileSize, end), ALIGN);
}

/**
 * Move the highest payload and sector bitmap blocks into the lowest free 1 MiB-aligned gaps
 * below them (never overlapping a block in use), in batches: the copies, flush, the new BAT
 * entries through the log (commit); then the log marked empty and the file cut after the
 * last block (1 MiB aligned, as every block offset is).
 */
export async function closeUp(state: VhdxState): Promise<void> {
  const bs = state.params.blockSize;
  const map = allocationMap(state);
  // structures are never moved; blocks go below the first block only after the leading ones
  // (a BAT region moved to the end of the file by a grow sits among or after the blocks)
  const structures = map.structures();
  type Item = VhdxEntry & { at: number; len: number };
  const items: Item[] = map.entries().map((e) => ({ ...e, at: map.lookup(e) * MiB, len: map.length(e) * MiB }));
  const dataStart = map.dataStart();
  // occupied ranges: every block where it is now, and (during a batch) where it is going, and
  // the structures past dataStart
  const busy = items.map((x) => [x.at, x.at + x.len] as [number, number]);
  for (const u of structures) if (u.end > dataStart) busy.push([u.start, u.end]);
  const gapFor = (len: number, below: number): number => {
    busy.sort((a, b) => a[0] - b[0]);
    let prev = dataStart;
    for (const [a, z] of busy) {
      if (a >= below) break;
      if (a - prev >= len) return prev;
      prev = Math.max(prev, z);
    }
    // the gap right below the block counts too (it was missed: a freed block just under the
    // last one was never reused)
    return below - prev >= len ? prev : -1;
  };
  items.sort((a, b) => a.at - b.at);
  const buf = Buffer.alloc(Math.max(bs, BITMAP_BLOCK_SIZE));
  for (;;) {
    const batch: { item: Item; to: number }[] = [];
    while (batch.length < 16 && items.length > 0) {
      const top = items[items.length - 1]!;
      const to = gapFor(top.len, top.at);
      if (to < 0 || to + top.len > top.at) break;
      busy.push([to, to + top.len]);
      batch.push({ item: top, to });
      items.pop();
    }
    if (batch.length === 0) break;
    for (const { item, to } of batch) {
      const b = buf.subarray(0, Math.min(item.len, state.fileSize - item.at));
      await state.store.readInto(b, item.at);
      await state.store.write(to, b);
    }
    for (const { item, to } of batch) map.set(item, to / MiB);
    await state.commit(); // flushes the copies before the log entry
    for (const { item, to } of batch) {
      const at = busy.findIndex(([a]) => a === item.at);
      busy.splice(at, 1);
      item.at = to;
      items.push(item);
    }
    items.sort((a, b) => a.at - b.at);
  }
  const last = items.reduce((m, x) => Math.max(m, x.at + x.len), Math.max(dataStart, ...structures.map((u) => u.end)));
  await cutAt(state, roundUp(last, ALIGN));
}
