/**
 * VHDX defragment (NOTES.md "Defragment"): blocks in virtual order, moved in batches planned by
 * relayout-plan.ts, each batch copied, flushed and switched through the log.
 */
import { DiskError } from '../../core/errors.js';
import { roundUp } from '../../core/ints.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { planRelayout, type PlanItem } from '../common/relayout-plan.js';
import { ALIGN, BITMAP_BLOCK_SIZE, MiB } from './structs.js';
import { allocationMap } from './map.js';
import type { VhdxState } from './state.js';
import { cutAt } from './compact.js';

/**
 * Defragment (NOTES.md "Defragment"): payload blocks in virtual order, each chunk's sector
 * bitmap block just before the chunk's first payload block, back to back from the first 1 MiB
 * after the structures, then the file cut after the last one. The moves come in batches from
 * relayout-plan.ts: every copy of a batch is written into space nothing references, then
 * `commit` flushes the copies before it logs and applies the new BAT entries; the old places
 * are reused only by a later batch. A fixed image whose blocks are already in virtual order
 * (what every producer writes) is left alone. The DataWriteGuid stays (the content does not
 * change).
 */
export async function defragment(state: VhdxState, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  state.checkWritable();
  await state.commit();
  const fileBytesBefore = await state.store.size();
  const bs = state.params.blockSize;
  const map = allocationMap(state);
  const structures = map.structures();
  // the final order: per chunk, its sector bitmap block, then its payload blocks; a last block
  // the file holds only in part (QEMU's fixed images) is copied as far as the file goes
  const items = map.entries();
  const plan: PlanItem[] = items.map((e) => ({ at: map.lookup(e), len: map.length(e) }));
  const total = items.length;
  opts.onProgress?.(0, total);
  if (state.fixed && plan.every((p, j) => j === 0 || p.at > plan[j - 1]!.at)) {
    opts.onProgress?.(total, total);
    return { fileBytesBefore, fileBytesAfter: fileBytesBefore };
  }
  // without a log no BAT entry can change safely: refused before anything is copied
  if (!state.logWriter) throw new DiskError('NOTSUPPORTED', 'this VHDX has no log: its blocks cannot be moved safely', { path: state.path, struct: 'header', field: 'logLength', found: 0 });
  // blocks start after the structures that come before the first block; a BAT region moved
  // to the end by a grow (growBatRegion) stays where it is and is stepped around
  const dataStart = map.dataStart();
  const structuresEnd = roundUp(Math.max(...structures.map((u) => u.end)), ALIGN);
  const fixedUnits = new Uint8Array(structuresEnd / MiB);
  for (const u of structures) fixedUnits.fill(1, Math.floor(u.start / MiB), Math.ceil(u.end / MiB));
  const { batches } = planRelayout(plan, fixedUnits, dataStart / MiB, Math.max(2, Math.min(16, Math.floor((64 * MiB) / bs))));
  const buf = Buffer.allocUnsafe(Math.max(bs, BITMAP_BLOCK_SIZE));
  for (const b of batches) {
    if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: state.path }, { cause: opts.signal.reason });
    // destinations past the end: the file is extended first (a hole), as allocate does
    const reach = Math.max(...b.moves.map((m) => (m.to + plan[m.item]!.len) * MiB));
    if (reach > state.fileSize) {
      await state.store.truncate(reach);
      state.fileSize = reach;
    }
    // blocks parked up there until the end (or a cancel) cuts the file: new blocks go after
    state.nextFree = Math.max(state.nextFree, roundUp(reach, ALIGN));
    for (const m of b.moves) {
      const from = m.from * MiB;
      const chunk = buf.subarray(0, Math.min(plan[m.item]!.len * MiB, state.fileSize - from));
      await state.store.readInto(chunk, from);
      await state.store.write(m.to * MiB, chunk);
    }
    for (const m of b.moves) map.set(items[m.item]!, m.to);
    await state.commit(); // flushes the copies before the log entry
    opts.onProgress?.(b.placed, total);
  }
  // the end: after the last whole block (cutAt never extends a file that ends inside it)
  let end = Math.max(dataStart, structuresEnd);
  for (const it of items) end = Math.max(end, (map.lookup(it) + map.length(it)) * MiB);
  await cutAt(state, end);
  opts.onProgress?.(total, total);
  return { fileBytesBefore, fileBytesAfter: await state.store.size() };
}
