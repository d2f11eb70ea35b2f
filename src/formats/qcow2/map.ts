/**
 * The allocation map of the active image, as compact and defragment see it (issue 12: the
 * shape a shared relayout engine will consume). Unit: one cluster. Entries: the normal data
 * clusters the active L1/L2 tables name, in guest order, each with the L2 entry that points at
 * it. Fixed structures: header, L1 table, refcount table and blocks, the active L2 tables.
 * Free space: clusters of refcount 0. Snapshot tables and what they name are not part of the
 * map: defragment refuses images with snapshots, compact moves nothing while they exist.
 */
import { DiskError } from '../../core/errors.js';
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
