/**
 * Compact in place (NOTES.md "Compact and discard"): zero clusters dropped, the highest
 * clusters moved down into free ones in crash-safe batches, the file cut.
 */
import { isZero } from '../../binary/zeros.js';
import { DiskError } from '../../core/errors.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { cutAfterLastUse, dropClusters } from './maintain.js';
import type { Qcow2State } from './state.js';
import { decodeL1, decodeL2, encodeL2 } from './structs.js';

/**
 * 1. Clusters stored here (refcount 1) that read as zeros are dropped: unallocated in a base,
 *    the zero flag in a v3 child (a v2 child keeps them: it has no zero marker).
 * 2. Without internal snapshots, the highest data clusters and L2 tables are moved down into
 *    the lowest free clusters, in batches: target refcounts raised, data copied, flush, table
 *    entries pointed at the copies, flush, old refcounts lowered. A kill leaves at most leaked
 *    clusters (check -r leaks), never an entry pointing at a cluster of refcount 0 or at bytes
 *    not yet copied. Moving stops at the first cluster that is other metadata.
 * 3. The file is cut after the last cluster with a refcount.
 */
export async function compact(this: Qcow2State, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  await this.prepareWrite();
  const fileBytesBefore = await this.store.size();
  const cs = this.clusterSize;
  const cancel = () => {
    if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: this.path }, { cause: opts.signal.reason });
  };
  const child = this.backingName !== undefined;
  if (!child || this.h.version >= 3) {
    const buf = Buffer.alloc(cs);
    await dropClusters.call(
      this,
      async (e) => {
        if (e.kind !== 'normal' || !e.copied) return false;
        await this.readHost(buf, e.offset);
        return isZero(buf);
      },
      child ? 'zero' : 'unallocate',
      (l1i) => {
        cancel();
        opts.onProgress?.(l1i, this.h.l1_size);
      },
    );
  }
  opts.onProgress?.(this.h.l1_size, this.h.l1_size);
  if (this.snapshots.length === 0) await moveDown.call(this);
  await cutAfterLastUse.call(this);
  return { fileBytesBefore, fileBytesAfter: await this.store.size() };
}

/** Step 2 of compact: the highest movable clusters into the lowest free ones. */
async function moveDown(this: Qcow2State): Promise<void> {
  const cs = this.clusterSize;
  const g = this.g;
  const total = Math.ceil(this.file.size / cs);
  const used = new Uint8Array(total);
  for (let c = 0; c < total; c++) used[c] = (await this.refs.get(c)) > 0 ? 1 : 0;
  // who points at each cluster we may move: an L2 entry (data) or an L1 entry (L2 table)
  type Owner = { l1i: number; idx: number };
  const owners = new Map<number, Owner>();
  for (let l1i = 0; l1i < this.h.l1_size; l1i++) {
    const l1e = decodeL1(this.l1, l1i);
    if (l1e.offset === 0 || !l1e.copied) continue;
    owners.set(l1e.offset / cs, { l1i, idx: -1 });
    const l2 = (await this.loadL2(l1i))!;
    for (let idx = 0; idx < g.l2Entries; idx++) {
      const e = decodeL2(l2, idx, g);
      if (e.kind === 'normal' && e.copied && e.offset % cs === 0) owners.set(e.offset / cs, { l1i, idx });
    }
  }
  let low = 0;
  let high = total - 1;
  const buf = Buffer.alloc(cs);
  for (;;) {
    const batch: { from: number; to: number; o: Owner }[] = [];
    let stop = false;
    while (batch.length < 64) {
      while (high >= 0 && !used[high]) high--;
      while (low < high && used[low]) low++;
      if (low >= high) break;
      const o = owners.get(high);
      // other metadata (refcount blocks or table, L1, snapshots) stays where it is
      if (!o || this.refs.blockOffset(Math.floor(low / this.refs.entriesPerBlock)) === 0) {
        stop = true;
        break;
      }
      // an L2 table moves alone: the data moves of its entries must not race its copy
      if (o.idx < 0 && batch.length > 0) break;
      batch.push({ from: high, to: low, o });
      used[low] = 1;
      used[high] = 0;
      if (o.idx < 0) break;
    }
    if (batch.length === 0) break;
    // a. refcounts of the targets
    for (const b of batch) {
      if (!(await this.refs.update(b.to, 1, 1))) throw new DiskError('INTERNAL', 'compact: a refcount block appeared under a target cluster', { path: this.path, found: b.to });
    }
    // b. the copies
    for (const b of batch) {
      if (b.o.idx < 0) {
        const t = (await this.loadL2(b.o.l1i))!;
        await this.store.write(b.to * cs, t);
      } else {
        await this.store.readInto(buf, b.from * cs);
        await this.store.write(b.to * cs, buf);
      }
    }
    await this.store.flush();
    // c. the entries
    for (const b of batch) {
      if (b.o.idx < 0) {
        const t = (await this.loadL2(b.o.l1i))!;
        await this.writeL1Entry(b.o.l1i, b.to * cs, true);
        this.l2Cache.delete(b.from * cs);
        this.cacheL2(b.to * cs, t);
      } else {
        const l2Off = decodeL1(this.l1, b.o.l1i).offset;
        const t = (await this.loadL2(b.o.l1i))!;
        encodeL2(t, b.o.idx, g, b.to * cs, { copied: true });
        const es = g.l2EntrySize;
        await this.store.write(l2Off + b.o.idx * es, t.subarray(b.o.idx * es, (b.o.idx + 1) * es));
      }
      owners.delete(b.from);
      owners.set(b.to, b.o);
    }
    await this.store.flush();
    // d. the old clusters freed
    await this.refs.decrementMany(batch.map((b) => b.from));
    await this.store.flush();
    if (stop) break;
  }
}
