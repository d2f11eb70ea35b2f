/**
 * Primitives discard, compact and defragment share: dropping clusters per L2 table (entries
 * first, then refcounts) and cutting the file after the last cluster in use.
 */
import type { Qcow2State } from './state.js';
import { decodeL1, decodeL2, encodeL2, type L2Entry } from './structs.js';

/**
 * Drop the clusters `pick` selects, per L2 table: the entries rewritten (0, or the zero flag),
 * then the clusters' refcounts lowered. Tables shared with a snapshot (L1 COPIED clear) are
 * left alone.
 */
export async function dropClusters(this: Qcow2State, pick: (e: L2Entry, cluster: number) => boolean | Promise<boolean>, mark: 'unallocate' | 'zero', progress?: (l1i: number) => void): Promise<void> {
  const cs = this.clusterSize;
  const g = this.g;
  for (let l1i = 0; l1i < this.h.l1_size; l1i++) {
    progress?.(l1i);
    const l1e = decodeL1(this.l1, l1i);
    if (l1e.offset === 0 || !l1e.copied) continue;
    const l2 = (await this.loadL2(l1i))!;
    const frees: number[] = [];
    let lo = Infinity;
    let hi = -1;
    for (let idx = 0; idx < g.l2Entries; idx++) {
      const c = l1i * g.l2Entries + idx;
      if (c * cs >= this.capacity) break;
      const e = decodeL2(l2, idx, g);
      if (!(await pick(e, c))) continue;
      if (e.kind === 'compressed') {
        for (let x = Math.floor(e.offset / cs); x <= Math.floor((e.offset + e.csize - 1) / cs); x++) frees.push(x);
        this.inflated.delete(e.offset);
      } else if (e.offset !== 0) {
        this.checkData(e, `l2[${l1i}][${idx}]`);
        frees.push(e.offset / cs);
      }
      encodeL2(l2, idx, g, 0, { zero: mark === 'zero' });
      lo = Math.min(lo, idx);
      hi = Math.max(hi, idx);
    }
    if (hi < 0) continue;
    const es = g.l2EntrySize;
    await this.store.write(l1e.offset + lo * es, l2.subarray(lo * es, (hi + 1) * es));
    if (frees.length > 0) {
      await this.store.flush();
      await this.refs.decrementMany(frees);
    }
  }
  await this.store.flush();
}

/** the file cut after the last cluster in use (never before the L1 table), allocation from the start again */
export async function cutAfterLastUse(this: Qcow2State): Promise<void> {
  const cs = this.clusterSize;
  const last = await this.refs.lastUsed();
  const end = Math.max((last + 1) * cs, Number(this.h.l1_table_offset) + this.l1.length);
  if (end < this.file.size) {
    await this.store.truncate(end);
    await this.store.flush();
    this.file.size = end;
  }
  this.refs.freeIndex = 0;
}
