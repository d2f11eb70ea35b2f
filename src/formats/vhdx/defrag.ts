/**
 * VHDX defragment (NOTES.md "Defragment"): blocks in virtual order, moved by the relayout
 * engine (common/relayout.ts) in batches planned by relayout-plan.ts, each batch copied,
 * flushed and switched through the log.
 */
import { DiskError } from '../../core/errors.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { defragmentMap } from '../common/relayout.js';
import { allocationMap, vhdxRelayout } from './map.js';
import type { VhdxState } from './state.js';

/**
 * Defragment (NOTES.md "Defragment"): payload blocks in virtual order, each chunk's sector
 * bitmap block just before the chunk's first payload block, back to back from the first 1 MiB
 * after the structures, then the file cut after the last one. Every copy of a batch is written
 * into space nothing references, then `commit` flushes the copies before it logs and applies
 * the new BAT entries; the old places are reused only by a later batch. A fixed image whose
 * blocks are already in virtual order (what every producer writes) is left alone. The
 * DataWriteGuid stays (the content does not change).
 */
export async function defragment(state: VhdxState, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  state.checkWritable();
  await state.commit();
  const fileBytesBefore = await state.store.size();
  const map = allocationMap(state);
  const at = map.entries().map((e) => map.lookup(e));
  if (state.fixed && at.every((p, j) => j === 0 || p > at[j - 1]!)) {
    opts.onProgress?.(0, at.length);
    opts.onProgress?.(at.length, at.length);
    return { fileBytesBefore, fileBytesAfter: fileBytesBefore, moved: 0 };
  }
  // without a log no BAT entry can change safely: refused before anything is copied
  if (!state.logWriter) throw new DiskError('NOTSUPPORTED', 'this VHDX has no log: its blocks cannot be moved safely', { path: state.path, struct: 'header', field: 'logLength', found: 0 });
  const { moved } = await defragmentMap(vhdxRelayout(state), opts);
  return { fileBytesBefore, fileBytesAfter: await state.store.size(), moved };
}
