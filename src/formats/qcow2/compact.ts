/**
 * Compact in place (NOTES.md "Compact and discard"): zero clusters dropped, the highest
 * clusters moved down into free ones by the relayout engine (common/relayout.ts), the file cut.
 */
import { isZero } from '../../binary/zeros.js';
import { compactMap, type MapItem } from '../common/relayout.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { dropClusters } from './maintain.js';
import { qcow2Relayout, type Qcow2Unit } from './map.js';
import type { Qcow2State } from './state.js';
import { decodeL1, decodeL2 } from './structs.js';

/**
 * 1. Clusters stored here (refcount 1) that read as zeros are dropped: unallocated in a base,
 *    the zero flag in a v3 child (a v2 child keeps them: it has no zero marker).
 * 2. Without internal snapshots, the highest data clusters and L2 tables are moved down into
 *    the lowest free clusters, in the engine's batches: target refcounts raised, data copied,
 *    flush, table entries pointed at the copies, flush, old refcounts lowered. A kill leaves at
 *    most leaked clusters (check -r leaks), never an entry pointing at a cluster of refcount 0
 *    or at bytes not yet copied. Other metadata and clusters no refcount block covers stay.
 * 3. The file is cut after the last cluster with a refcount.
 */
export async function compact(this: Qcow2State, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  this.refuseDataFile('compact');
  await this.prepareWrite();
  const fileBytesBefore = await this.store.size();
  const cs = this.clusterSize;
  const child = this.backingName !== undefined;
  const map = qcow2Relayout(this, 'compact');
  if (!child || this.h.version >= 3) {
    const g = this.g;
    map.candidates = async () => {
      const out: MapItem<Qcow2Unit>[] = [];
      for (let l1i = 0; l1i < this.h.l1_size; l1i++) {
        const l1e = decodeL1(this.l1, l1i);
        if (l1e.offset === 0 || !l1e.copied) continue;
        const l2 = (await this.loadL2(l1i))!;
        for (let idx = 0; idx < g.l2Entries; idx++) {
          if ((l1i * g.l2Entries + idx) * cs >= this.capacity) break;
          const e = decodeL2(l2, idx, g);
          if (e.kind === 'normal' && e.copied) out.push({ entry: { kind: 'data', l1i, idx }, at: e.offset / cs, len: 1 });
        }
      }
      return out;
    };
    map.droppable = async (it, scratch) => {
      await this.readHost(scratch, it.at * cs);
      return isZero(scratch);
    };
    map.drop = async (items) => {
      const pick = new Set(items.map((it) => it.entry.l1i * g.l2Entries + (it.entry.kind === 'data' ? it.entry.idx : 0)));
      await dropClusters.call(this, (e, c) => e.kind === 'normal' && e.copied && pick.has(c), child ? 'zero' : 'unallocate');
    };
  }
  const { moved } = await compactMap(map, opts);
  return { fileBytesBefore, fileBytesAfter: await this.store.size(), moved };
}
