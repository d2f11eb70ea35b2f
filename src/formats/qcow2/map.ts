/**
 * The allocation map of the active image, as compact and defragment see it (issue 12: the
 * shape a shared relayout engine will consume). Unit: one cluster. Entries: the normal data
 * clusters the active L1/L2 tables name, in guest order, each with the L2 entry that points at
 * it. Fixed structures: header, L1 table, refcount table and blocks, the active L2 tables.
 * Free space: clusters of refcount 0. Snapshot tables and what they name are not part of the
 * map: defragment refuses images with snapshots, compact moves nothing while they exist.
 */
import { DiskError } from '../../core/errors.js';
import type { MapItem, RelayoutMap } from '../common/relayout.js';
import { cutAfterLastUse } from './maintain.js';
import type { Qcow2State } from './state.js';
import { decodeL1, decodeL2, encodeL2 } from './structs.js';

/** one stored data cluster and the L2 entry that names it */
export interface MapEntry {
  l1i: number;
  idx: number;
  /** host cluster index */
  cluster: number;
}

export class Qcow2Map {
  constructor(private readonly s: Qcow2State) {}

  /** bytes of one allocation unit (a cluster) */
  get unit(): number {
    return this.s.clusterSize;
  }

  /** host cluster index of guest cluster `c` when this image stores it as a normal cluster */
  async lookup(c: number): Promise<number | undefined> {
    const g = this.s.geometry;
    const l1i = Math.floor(c / g.l2Entries);
    const l2 = await this.s.loadL2(l1i);
    if (!l2) return undefined;
    const e = decodeL2(l2, c - l1i * g.l2Entries, g);
    return e.kind === 'normal' ? e.offset / this.s.clusterSize : undefined;
  }

  /** clusters of the fixed structures: header, L1 table, refcount table and blocks, active L2 tables */
  fixed(): Set<number> {
    const s = this.s;
    const cs = s.clusterSize;
    const meta = new Set<number>([0]);
    for (let c = 0; c < Math.ceil(s.l1.length / cs); c++) meta.add(Number(s.h.l1_table_offset) / cs + c);
    for (let c = 0; c < s.refs.tableClusters; c++) meta.add(s.refs.tableOffset / cs + c);
    for (let rt = 0; rt < s.refs.tableEntries; rt++) if (s.refs.blockOffset(rt) !== 0) meta.add(s.refs.blockOffset(rt) / cs);
    for (let l1i = 0; l1i < s.h.l1_size; l1i++) {
      const l1e = decodeL1(s.l1, l1i);
      if (l1e.offset !== 0) meta.add(l1e.offset / cs);
    }
    return meta;
  }

  /**
   * The normal data clusters of the active tables in guest order. A table or cluster that is
   * shared (COPIED clear) is refused: without snapshots that is damage for check to look at.
   */
  async entries(): Promise<MapEntry[]> {
    const s = this.s;
    const cs = s.clusterSize;
    const g = s.geometry;
    const out: MapEntry[] = [];
    for (let l1i = 0; l1i < s.h.l1_size; l1i++) {
      const l1e = decodeL1(s.l1, l1i);
      if (l1e.offset === 0) continue;
      if (!l1e.copied) throw this.shared(`l1[${l1i}]`, l1e.offset);
      const l2 = (await s.loadL2(l1i))!;
      for (let idx = 0; idx < g.l2Entries; idx++) {
        if ((l1i * g.l2Entries + idx) * cs >= s.capacity) break;
        const e = decodeL2(l2, idx, g);
        if (e.kind !== 'normal') continue;
        const field = `l2[${l1i}][${idx}]`;
        s.checkData(e, field);
        if (!e.copied) throw this.shared(field, e.offset);
        out.push({ l1i, idx, cluster: e.offset / cs });
      }
    }
    return out;
  }

  /** the refusal for a shared cluster in an image without snapshots */
  shared(field: string, found: unknown): DiskError {
    return new DiskError('NOTSUPPORTED', 'a cluster is shared (COPIED flag clear or refcount above 1) although the image has no snapshots: run check first', { path: this.s.path, struct: 'L2 table', field, found });
  }

  /** Point L2 entries at new clusters (COPIED set): one write per table, spanning its changed entries. */
  async setEntries(list: readonly MapEntry[]): Promise<void> {
    const s = this.s;
    const g = s.geometry;
    const byTable = new Map<number, MapEntry[]>();
    for (const m of list) {
      const l = byTable.get(m.l1i);
      if (l) l.push(m);
      else byTable.set(m.l1i, [m]);
    }
    for (const [l1i, moves] of byTable) {
      const t = (await s.loadL2(l1i))!;
      let lo = Infinity;
      let hi = -1;
      for (const m of moves) {
        encodeL2(t, m.idx, g, m.cluster * s.clusterSize, { copied: true });
        lo = Math.min(lo, m.idx);
        hi = Math.max(hi, m.idx);
      }
      const es = g.l2EntrySize;
      await s.store.write(decodeL1(s.l1, l1i).offset + lo * es, t.subarray(lo * es, (hi + 1) * es));
    }
  }

  /** free space: a cluster of refcount 0 */
  async isFree(c: number): Promise<boolean> {
    return (await this.s.refs.get(c)) === 0;
  }
}

/** what a qcow2 relayout moves: a data cluster (its L2 entry) or, in compact, an L2 table (its L1 entry) */
export type Qcow2Unit = { kind: 'data'; l1i: number; idx: number } | { kind: 'l2'; l1i: number };

/**
 * The map for the relayout engine (common/relayout.ts). Unit: one cluster. Compact moves data
 * clusters and L2 tables (a table alone in its batch: its data's entry writes must not race its
 * copy); defragment moves data clusters only, refusing shared ones. Fixed: every cluster with a
 * refcount that is not moved, and (compact) every cluster no refcount block covers. Per batch
 * the engine calls reserve (targets' refcounts raised), the copies, setEntries (L2 / L1 entries),
 * release (old refcounts lowered), each followed by a flush: a kill leaves at most leaks.
 */
export function qcow2Relayout(s: Qcow2State, purpose: 'compact' | 'defragment'): RelayoutMap<Qcow2Unit> {
  const cs = s.clusterSize;
  const map = new Qcow2Map(s);
  let moving = new Set<number>();
  const limit = async () => Math.max(Math.ceil(s.file.size / cs), (await s.refs.lastUsed()) + 1);
  return {
    path: s.path,
    unit: cs,
    dataStart: 0,
    async entries() {
      const out: MapItem<Qcow2Unit>[] = [];
      if (purpose === 'defragment') {
        const meta = map.fixed();
        for (const e of await map.entries()) {
          const field = `l2[${e.l1i}][${e.idx}]`;
          if (moving.has(e.cluster) || meta.has(e.cluster)) throw new DiskError('CORRUPT', 'a data cluster is also used by another entry or by metadata: run check', { path: s.path, struct: 'L2 table', field, found: e.cluster * cs });
          moving.add(e.cluster);
          out.push({ entry: { kind: 'data', l1i: e.l1i, idx: e.idx }, at: e.cluster, len: 1 });
        }
        for (const it of out) if ((await s.refs.get(it.at)) !== 1) throw map.shared(`refcount[${it.at}]`, await s.refs.get(it.at));
        return out;
      }
      // compact: what the active tables name (with snapshots nothing moves: clusters are shared)
      moving = new Set<number>();
      if (s.snapshots.length > 0) return out;
      const g = s.geometry;
      const add = (at: number, entry: Qcow2Unit) => {
        if (moving.has(at)) return;
        moving.add(at);
        out.push({ entry, at, len: 1, solo: entry.kind === 'l2' });
      };
      for (let l1i = 0; l1i < s.h.l1_size; l1i++) {
        const l1e = decodeL1(s.l1, l1i);
        if (l1e.offset === 0 || !l1e.copied || l1e.offset % cs !== 0) continue;
        add(l1e.offset / cs, { kind: 'l2', l1i });
        const l2 = (await s.loadL2(l1i))!;
        for (let idx = 0; idx < g.l2Entries; idx++) {
          const e = decodeL2(l2, idx, g);
          if (e.kind === 'normal' && e.copied && e.offset % cs === 0 && e.offset < s.file.size) add(e.offset / cs, { kind: 'data', l1i, idx });
        }
      }
      return out;
    },
    async fixed() {
      const n = await limit();
      const fixed = new Uint8Array(n);
      for (let c = 0; c < n; c++) {
        if (moving.has(c)) continue;
        // compact never adds refcount blocks: a cluster no block covers is no target
        if ((await s.refs.get(c)) > 0 || (purpose === 'compact' && s.refs.blockOffset(Math.floor(c / s.refs.entriesPerBlock)) === 0)) fixed[c] = 1;
      }
      return fixed;
    },
    async prepare(plan) {
      // every refcount block the moves need and the file lacks, made in one go: each new block
      // is a cluster the next plan must step around, so a few rounds settle it
      const missing = new Map<number, number>(); // refcount block index -> a cluster it covers
      for (const b of plan.batches) {
        for (const m of b.moves) {
          const rt = Math.floor(m.to / s.refs.entriesPerBlock);
          if (s.refs.blockOffset(rt) === 0 && !missing.has(rt)) missing.set(rt, m.to);
        }
      }
      if (missing.size === 0) return false;
      // new blocks go past the final layout (a block there is dropped again at the end, when it
      // describes only free clusters; among the targets it would stay for good)
      s.refs.freeIndex = Math.max(s.refs.freeIndex, plan.finalEnd);
      for (const cluster of missing.values()) await s.refs.ensureBlock(cluster);
      await s.store.flush();
      return true;
    },
    async reserve(moves) {
      const targets = moves.map((m) => m.to).sort((x, y) => x - y);
      for (let i = 0; i < targets.length; ) {
        let j = i + 1;
        while (j < targets.length && targets[j] === targets[j - 1]! + 1) j++;
        if (!(await s.refs.update(targets[i]!, j - i, 1))) throw new DiskError('INTERNAL', `${purpose}: a refcount block appeared under a target cluster`, { path: s.path, found: targets[i] });
        i = j;
      }
      return true;
    },
    async read(into, at) {
      await s.readHost(into, at);
      return into;
    },
    async write(data, at) {
      await s.store.write(at, data);
      s.file.size = Math.max(s.file.size, at + data.length);
    },
    flush: () => s.store.flush(),
    async setEntries(moves) {
      const data: MapEntry[] = [];
      for (const m of moves) {
        const e = m.item.entry;
        if (e.kind === 'data') data.push({ l1i: e.l1i, idx: e.idx, cluster: m.to });
        else {
          const t = (await s.loadL2(e.l1i))!;
          await s.writeL1Entry(e.l1i, m.to * cs, true);
          s.l2Cache.delete(m.from * cs);
          s.cacheL2(m.to * cs, t);
        }
      }
      if (data.length > 0) await map.setEntries(data);
      for (const m of moves) {
        moving.delete(m.from);
        moving.add(m.to);
      }
    },
    release: (moves) => s.refs.decrementMany(moves.map((m) => m.from)),
    async cut() {
      if (purpose === 'defragment') await s.refs.dropEmptyBlocks();
      await cutAfterLastUse.call(s);
    },
  };
}
