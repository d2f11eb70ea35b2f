/**
 * The allocation map of a hosted sparse extent, as the maintenance files (compact.ts, check.ts,
 * resize.ts) see it: `SparseState` is what they may read and change of an open extent
 * (SparseExtent implements it), and `vmdkRelayout` is the extent as the relayout engine
 * (common/relayout.ts) sees it for compact and defragment. Unit: one sector, entries one grain
 * (`grainSectors`) long, targets grain-aligned from the first grain boundary after overHead;
 * fixed structures: header, descriptor, both directories and every grain table either names;
 * free space: what no grain or table covers.
 */
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE, roundUp } from '../../core/ints.js';
import { isZero } from '../../binary/zeros.js';
import { readU32Array, u32Bytes } from '../../binary/tables.js';
import type { ByteStore } from '../../storage/store.js';
import type { MapItem, RelayoutMap } from '../common/relayout.js';
import type { Overlap, SparseMap } from './overlap.js';
import type { SparseExtentHeaderValue } from './structs.js';

/** One open hosted sparse extent, as the role files work on it (`this` of their functions). */
export interface SparseState {
  readonly store: ByteStore;
  readonly path: string;
  readonly header: SparseExtentHeaderValue;
  readonly readOnly: boolean;
  readonly compressed: boolean;
  readonly version: number;
  /** the allocation unit */
  readonly grainSectors: number;
  readonly grainBytes: number;
  readonly numGTEs: number;
  /** bytes of one grain table, whole sectors */
  readonly gtBytes: number;
  /** grain directory: sector of each grain table, 0 = none */
  readonly gd: Uint32Array;
  /** redundant grain directory; replaced when a repair rebuilds the copy elsewhere */
  rgd: Uint32Array | undefined;
  readonly gdOffsetBytes: number;
  rgdOffsetBytes: number;
  readonly overHeadSectors: number;
  readonly gtCache: Map<number, Uint32Array>;
  fileSize: number;
  /** where the next grain or table is placed (grain-aligned, past every grain an entry names) */
  nextFree: number;
  /** metadata pieces sharing sectors (found at open) */
  overlaps: Overlap[];
  /** why this handle may not write (an open for check of an extent whose metadata overlaps) */
  refusal: DiskError | undefined;
  readonly hasZeroMarker: boolean;
  /** the fixed structures, for the overlap rules */
  map(): SparseMap;
  assertWritable(): void;
  /** the grain table of directory entry `g` (cached), undefined where the entry is 0 */
  gt(gdIndex: number): Promise<Uint32Array | undefined>;
  /** the entry of grain `gi`, checked to lie in the grain area */
  gte(gi: number): Promise<number>;
  checkedEntry(gi: number, e: number): number;
  /** set entries: primary then redundant table (or redundant first, for entries that free a grain) */
  setEntries(entries: { gi: number; value: number }[], redundantFirst?: boolean): Promise<void>;
  /** read file bytes, zeros past the end of a truncated file */
  readFile(into: Buffer, at: number): Promise<void>;
  write(data: Buffer, offset: number): Promise<void>;
}

/**
 * The extent as the relayout engine sees it. Entries are grains (by grain index, in virtual
 * order); `dropTo` (compact) is the entry a grain that reads as zeros becomes: 0 in a base, 1
 * in a child whose header allows it, undefined (nothing dropped) in a version-1 child, where
 * GTE 0 would show the parent. Dropped entries are written redundant table first (setEntries);
 * moves point the primary, then the redundant table at the copies. Before the first look the
 * redundant tables are made equal to the primary ones: a killed earlier run may have left a
 * copy naming a slot the primary no longer uses, which must not be handed to another grain.
 */
export function vmdkRelayout(st: SparseState, dropTo?: 0 | 1): RelayoutMap<number> {
  st.assertWritable();
  if (st.compressed) throw new DiskError('NOTSUPPORTED', 'compressed (streamOptimized) extents cannot be rearranged in place', { path: st.path, field: 'flags' });
  const gs = st.grainSectors;
  let items: MapItem<number>[] = [];
  let fixedEnd = st.overHeadSectors;
  const map: RelayoutMap<number> = {
    path: st.path,
    unit: SECTOR_SIZE,
    dataStart: roundUp(st.overHeadSectors, gs),
    align: gs,
    batch: 64,
    async entries() {
      st.gtCache.clear();
      items = [];
      let synced = false;
      for (let g = 0; g < st.gd.length; g++) {
        const table = await st.gt(g);
        if (!table) continue;
        for (let i = 0; i < table.length; i++) {
          const gi = g * st.numGTEs + i;
          const e = st.checkedEntry(gi, table[i]!);
          if (e > 1) items.push({ entry: gi, at: e, len: gs });
        }
        if (st.rgd && st.rgd[g] !== 0) {
          const copy = await readU32Array(st.store, st.rgd[g]! * SECTOR_SIZE, st.numGTEs);
          if (!u32Bytes(copy, 0, copy.length).equals(u32Bytes(table, 0, table.length))) {
            await st.store.write(st.rgd[g]! * SECTOR_SIZE, u32Bytes(table, 0, table.length));
            synced = true;
          }
        }
      }
      if (synced) await st.store.flush();
      const bySector = [...items].sort((a, b) => a.at - b.at);
      for (let k = 1; k < bySector.length; k++) {
        if (bySector[k]!.at < bySector[k - 1]!.at + gs) throw new DiskError('CORRUPT', 'two grains share a slot of the file: run check --repair first', { path: st.path, struct: 'grain table', field: `GTE[${bySector[k]!.entry}]`, offset: bySector[k]!.at * SECTOR_SIZE });
      }
      return items;
    },
    async fixed() {
      const gtSectors = st.gtBytes / SECTOR_SIZE;
      const gdSectors = Math.ceil((st.gd.length * 4) / SECTOR_SIZE);
      const ranges: [number, number][] = [[0, st.overHeadSectors], [st.gdOffsetBytes / SECTOR_SIZE, st.gdOffsetBytes / SECTOR_SIZE + gdSectors]];
      if (st.rgd) ranges.push([st.rgdOffsetBytes / SECTOR_SIZE, st.rgdOffsetBytes / SECTOR_SIZE + gdSectors]);
      for (const dir of [st.gd, st.rgd]) if (dir) for (const e of dir) if (e !== 0) ranges.push([e, e + gtSectors]);
      fixedEnd = Math.max(...ranges.map((r) => r[1]));
      const fixed = new Uint8Array(Math.max(fixedEnd, Math.ceil(st.fileSize / SECTOR_SIZE)));
      for (const [a, z] of ranges) fixed.fill(1, a, z);
      return fixed;
    },
    read: async (into, at) => {
      await st.readFile(into, at);
      return into;
    },
    async write(data, at) {
      await st.store.write(at, data);
      st.fileSize = Math.max(st.fileSize, at + data.length);
    },
    flush: () => st.store.flush(),
    async setEntries(moves) {
      await st.setEntries(moves.map((m) => ({ gi: m.item.entry, value: m.to })));
      st.nextFree = roundUp(st.fileSize, st.grainBytes);
    },
    async cut() {
      // after the last grain or table still in use (the moves are durable by now)
      let end = fixedEnd;
      for (const it of items) end = Math.max(end, it.at + gs);
      if (end * SECTOR_SIZE < st.fileSize) {
        await st.store.flush();
        await st.store.truncate(end * SECTOR_SIZE);
        st.fileSize = end * SECTOR_SIZE;
      }
      st.nextFree = roundUp(st.fileSize, st.grainBytes);
      await st.store.flush();
    },
  };
  if (dropTo !== undefined) {
    map.droppable = async (it, scratch) => {
      const grain = scratch.subarray(0, st.grainBytes);
      await st.readFile(grain, it.at * SECTOR_SIZE);
      return isZero(grain);
    };
    map.drop = async (list) => {
      const drops = list.map((it) => ({ gi: it.entry, value: dropTo }));
      for (let k = 0; k < drops.length; k += 4096) await st.setEntries(drops.slice(k, k + 4096), true);
      await st.store.flush();
    };
  }
  return map;
}
