/**
 * VHDX compact and close-up (NOTES.md "Compact"): blocks that read as zeros dropped, then the
 * relayout engine (common/relayout.ts) moves the highest blocks into the lowest free gaps,
 * each batch copied, flushed and switched through the log, and the file is cut after the last
 * block (map.ts cutAt, shared with defragment).
 */
import { DiskError } from '../../core/errors.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { isZero } from '../../binary/zeros.js';
import { compactMap } from '../common/relayout.js';
import { MiB, PAYLOAD } from './structs.js';
import { vhdxRelayout } from './map.js';
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
  const map = vhdxRelayout(state);
  map.droppable = async ({ entry: e }, scratch) => {
    if (e.kind !== 'payload') return false;
    const st = state.pState[e.i];
    if (st === PAYLOAD.FULLY_PRESENT) {
      const b = scratch.subarray(0, state.blockLen(e.i));
      await state.store.readInto(b, state.pOff[e.i]! * MiB);
      return isZero(b);
    }
    return st === PAYLOAD.PARTIALLY_PRESENT && isZero(await state.bitmap(e.i));
  };
  map.drop = async (items) => {
    for (const { entry: e } of items) {
      if (state.pState[e.i] === PAYLOAD.FULLY_PRESENT) state.setPayload(e.i, diff ? PAYLOAD.ZERO : PAYLOAD.NOT_PRESENT, 0);
      else {
        state.setPayload(e.i, PAYLOAD.NOT_PRESENT, 0);
        state.bitmaps.delete(e.i);
      }
    }
    await state.commit();
  };
  const { moved } = await compactMap(map, opts);
  return { fileBytesBefore, fileBytesAfter: await state.store.size(), moved };
}

/**
 * Move the highest payload and sector bitmap blocks into the lowest free 1 MiB-aligned gaps
 * below them (the engine's close-up: copies, flush, the new BAT entries through the log), then
 * the log marked empty and the file cut after the last block. Discard calls it after dropping
 * blocks.
 */
export async function closeUp(state: VhdxState): Promise<void> {
  await compactMap(vhdxRelayout(state));
}
