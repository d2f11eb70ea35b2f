/**
 * Defragment in place (NOTES.md "Defragment"): data clusters in guest order, moved in
 * crash-safe batches planned by relayout-plan.ts.
 */
import { DiskError } from '../../core/errors.js';
import { type PlanItem, planRelayout, type RelayoutPlan } from '../common/relayout-plan.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { cutAfterLastUse } from './maintain.js';
import { Qcow2Map } from './map.js';
import type { Qcow2State } from './state.js';

/** clusters moved per crash-safe step of defragment (4 flushes each) */
const MOVE_BATCH = 64;

/**
 * Defragment (NOTES.md "Defragment"): the data clusters of the active L1/L2 tables in guest
 * order from the start of the file, skipping every cluster that holds anything else (header,
 * L1, L2 tables, refcount table and blocks, compressed clusters, preallocated zero clusters,
 * leaked clusters): those stay where they are. The moves come in batches from
 * relayout-plan.ts; per batch: the targets' refcounts raised, flush; the copies, flush; the L2
 * entries pointed at them, flush; the old clusters' refcounts lowered, flush. A kill leaves at
 * most leaked clusters. Refcount blocks for every target are made before the first move (a
 * block made mid-way could land on a planned target). Images with internal snapshots are
 * refused (their clusters are shared). The file is cut after the last cluster in use.
 */
export async function defragment(this: Qcow2State, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  await this.prepareWrite();
  if (this.snapshots.length > 0) {
    throw new DiskError('NOTSUPPORTED', `an image with internal snapshots cannot be defragmented (their clusters are shared; ${this.snapshots.length} snapshot(s))`, { path: this.path, struct: 'header', field: 'nb_snapshots', found: this.snapshots.length });
  }
  const fileBytesBefore = await this.store.size();
  const cs = this.clusterSize;
  const map = new Qcow2Map(this);
  const shared = (field: string, found: unknown) => map.shared(field, found);
  // the data clusters of the active tables in guest order, and the entry that points at each
  const meta = map.fixed();
  const owners = await map.entries();
  const hosts = owners.map((o) => o.cluster);
  const isData = new Set<number>();
  hosts.forEach((h, i) => {
    const field = `l2[${owners[i]!.l1i}][${owners[i]!.idx}]`;
    if (isData.has(h) || meta.has(h)) throw new DiskError('CORRUPT', 'a data cluster is also used by another entry or by metadata: run check', { path: this.path, struct: 'L2 table', field, found: h * cs });
    isData.add(h);
  });
  for (const h of hosts) if ((await this.refs.get(h)) !== 1) throw shared(`refcount[${h}]`, await this.refs.get(h));
  const total = hosts.length;
  opts.onProgress?.(0, total);
  const items: PlanItem[] = hosts.map((at) => ({ at, len: 1 }));
  let plan: RelayoutPlan | undefined;
  for (let attempt = 0; !plan; attempt++) {
    // fixed: every cluster with a refcount that is not a data cluster we move
    const limit = Math.max(Math.ceil(this.file.size / cs), (await this.refs.lastUsed()) + 1);
    const fixed = new Uint8Array(limit);
    for (let c = 0; c < limit; c++) if (!isData.has(c) && (await this.refs.get(c)) > 0) fixed[c] = 1;
    const p = planRelayout(items, fixed, 0, MOVE_BATCH);
    // every refcount block the moves need and the file lacks, made in one go: each new block
    // is a cluster the next plan must step around, so a few rounds settle it
    const missing = new Map<number, number>(); // refcount block index -> a cluster it covers
    for (const b of p.batches) {
      for (const m of b.moves) {
        const rt = Math.floor(m.to / this.refs.entriesPerBlock);
        if (this.refs.blockOffset(rt) === 0 && !missing.has(rt)) missing.set(rt, m.to);
      }
    }
    if (missing.size === 0) plan = p;
    else {
      if (attempt >= 64) throw new DiskError('INTERNAL', 'defragment: refcount blocks for the targets keep moving the plan', { path: this.path });
      // new blocks go past the final layout (a block there is dropped again at the end,
      // when it describes only free clusters; among the targets it would stay for good)
      this.refs.freeIndex = Math.max(this.refs.freeIndex, p.finalEnd);
      for (const cluster of missing.values()) await this.refs.ensureBlock(cluster);
      await this.store.flush();
    }
  }
  const buf = Buffer.alloc(cs);
  for (const b of plan.batches) {
    if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: this.path }, { cause: opts.signal.reason });
    // a. the targets' refcounts (their blocks exist: see above)
    const targets = b.moves.map((m) => m.to).sort((x, y) => x - y);
    for (let i = 0; i < targets.length; ) {
      let j = i + 1;
      while (j < targets.length && targets[j] === targets[j - 1]! + 1) j++;
      if (!(await this.refs.update(targets[i]!, j - i, 1))) throw new DiskError('INTERNAL', 'defragment: a refcount block appeared under a target cluster', { path: this.path, found: targets[i] });
      i = j;
    }
    await this.store.flush();
    // b. the copies
    for (const m of b.moves) {
      await this.readHost(buf, m.from * cs);
      await this.store.write(m.to * cs, buf);
      this.file.size = Math.max(this.file.size, (m.to + 1) * cs);
    }
    await this.store.flush();
    // c. the L2 entries, one write per table
    await map.setEntries(b.moves.map((m) => ({ ...owners[m.item]!, cluster: m.to })));
    await this.store.flush();
    // d. the old clusters
    await this.refs.decrementMany(b.moves.map((m) => m.from));
    await this.store.flush();
    opts.onProgress?.(b.placed, total);
  }
  await this.refs.dropEmptyBlocks();
  await cutAfterLastUse.call(this);
  opts.onProgress?.(total, total);
  return { fileBytesBefore, fileBytesAfter: await this.store.size() };
}
