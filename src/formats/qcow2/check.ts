/**
 * qcow2 consistency check and repair, as `qemu-img check` does it (qcow2.md §12):
 *
 * 1. Count the references every structure makes to every host cluster: the header cluster, the
 *    active L1 table and every L2 table and data cluster under it, each snapshot's L1 table and
 *    what it maps (again: a snapshot sharing an L2 table counts it, and its clusters, once more),
 *    the snapshot table, the refcount table and its blocks, and the bitmap directory, tables and
 *    data when the bitmaps autoclear bit says they are valid. Compressed clusters count every
 *    host cluster their bytes touch. Tables that point past the end of the file (by a cluster or
 *    more), misaligned offsets and reserved bits are corruptions, and what they point at is not
 *    counted.
 * 2. Compare with the stored refcounts: stored > counted is a leak (space wasted, no data at
 *    risk), stored < counted a corruption (the cluster could be handed out again while in use).
 * 3. COPIED flags of the active L1 and L2 entries must say "refcount is exactly 1".
 *
 * Repair: leaks get their refcount lowered to the count; refcounts below the count are raised
 * when that is safe — the cluster is used only as data, or only as L2 tables (sharing, as
 * snapshots do), never when metadata overlaps something else; then COPIED flags are set to
 * match the refcounts; then the dirty bit is cleared. Refcount blocks a repair needs are placed
 * past the end of the file, beyond every referenced cluster.
 */
import type { CheckFinding, CheckOptions, CheckReport } from '../types.js';
import { separateSharedActive } from './dedupe.js';
import { BAD_BLOCK_ENTRY } from './refcounts.js';
import { FindingLog, fieldSpan, span } from '../common/findings.js';
import type { Qcow2State } from './state.js';
import { emptyEntry, readTables, words } from './tables.js';
import { AUTOCLEAR, EXT, MAX_L1_BYTES, decodeL1, decodeL2, getRefcount } from './structs.js';

const DATA = 1;
const L2 = 2;
const META = 3;
const MIXED = 4;

const hex = (n: number) => `0x${n.toString(16)}`;

/** where an entry lives, so that runs of like entries become one finding */
interface EntryAt {
  /** field name of the table: `l1`, `l2[3]`, `snapshot[0].l1` */
  table: string;
  idx: number;
}

export async function checkQcow2(img: Qcow2State, opts: CheckOptions): Promise<CheckReport> {
  // a dry run makes every decision a repair would, writes nothing, and reads the refcounts a
  // repair would have written from `planned`
  const dryRun = opts.repair && !!opts.dryRun;
  const write = opts.repair && !dryRun;
  const flags = (repairable: boolean) => (!opts.repair ? {} : !repairable ? { notRepairable: true } : dryRun ? { wouldRepair: true } : { repaired: true });
  const planned = new Map<number, number>();
  const log = new FindingLog();
  // 0. clusters named twice by the active tables (or named as data and as metadata) get their
  // own copies first: raising the refcount instead leaves a state the next write breaks
  // (with an external data file the data clusters are not in this file: nothing to separate)
  if (opts.repair && !img.dataFile) await separateSharedActive(img, log, { dryRun });

  const h = img.header;
  const g = img.geometry;
  const cs = g.clusterSize;
  const refs = img.refs;
  const fileSize = img.fileSize;
  // one cluster more than the file has: a structure may run up to a cluster past the end
  const ref = new Uint32Array(Math.ceil(fileSize / cs) + 1);
  const role = new Uint8Array(ref.length);
  const corrupt = (message: string, struct: string, field?: string, offset?: number, repairable = false) => log.one({ kind: 'corruption', message, struct, field, offset, ...flags(repairable) });
  /** a bad table entry; runs of like entries of one table become one finding */
  /** `single` writes the message of a run of one (only called then: a damaged table has many) */
  const series = new Map<string, Map<string, string>>(); // table -> reason -> series key, made once
  const seriesOf = (struct: string, table: string, reason: string): string => {
    let m = series.get(table);
    if (!m) series.set(table, (m = new Map()));
    let k = m.get(reason);
    if (k === undefined) m.set(reason, (k = `${struct}:${table}:${reason}`));
    return k;
  };
  const badEntry = (reason: string, single: () => string, struct: string, at: EntryAt, offset?: number): void => {
    const key = seriesOf(struct, at.table, reason);
    if (log.extend('corruption', key, at.idx)) return;
    log.add('corruption', key, at.idx, (a, b) => (a === b ? { message: single(), field: `${at.table}[${a}]` } : { message: `${reason}: ${b - a + 1} entries`, field: `${at.table}[${a}..${b}]` }), {
      struct,
      offset,
      ...flags(false),
    });
  };

  /**
   * References to clusters past the end of the file (a truncated file): the refcounts stored for
   * clusters there are not cleared while anything still names them (QEMU then reports
   * OFLAG_COPIED entries with refcount 0: a repair made its check worse)
   */
  let pastEndRefs = 0;
  const pastEndReasons = new Map<string, string>();
  const pastEndReason = (what: string): string => {
    let r = pastEndReasons.get(what);
    if (r === undefined) pastEndReasons.set(what, (r = `${what}s lie past the end of the file by a cluster or more`));
    return r;
  };
  /** count a reference to every cluster of [offset, offset+size); false when it is past the end */
  const inc = (offset: number, size: number, r: number, what: string, struct: string, field?: string, times = 1, at?: EntryAt): boolean => {
    if (size <= 0) return true;
    if (offset + size - fileSize >= cs || !Number.isSafeInteger(offset + size)) {
      const single = () => `${what} at ${hex(offset)} (${size} bytes) lies past the end of the file by a cluster or more`;
      if (at) badEntry(pastEndReason(what), single, struct, at, offset);
      else corrupt(single(), struct, field, offset);
      pastEndRefs++;
      return false;
    }
    for (let c = Math.floor(offset / cs); c <= Math.floor((offset + size - 1) / cs); c++) {
      ref[c] = Math.min(0xffffffff, ref[c]! + times);
      // data and L2 tables may be shared (snapshots); metadata named twice is an overlap
      const alone = role[c] === 0 && (times === 1 || r !== META);
      role[c] = alone || (role[c] === r && r !== META) ? r : MIXED;
    }
    return true;
  };

  /**
   * L2 tables by offset, with how many L1 entries (active and snapshots) name them: each table
   * is read and walked once and its clusters counted that many times, so a table shared by many
   * snapshots, or named a million times by a crafted L1, costs one read.
   */
  const l2Refs = new Map<number, { times: number; field: string; active: boolean }>();
  /**
   * An L1 entry whose L2 table cannot be walked (misaligned, past the end): the clusters that
   * table named are unknown, so clusters that look leaked may be its data, and freeing them
   * would lose it for good (QEMU still counts what the damaged entry points at, and called the
   * image worse after such a repair). Leaks are then reported, not freed.
   */
  let lostTables = 0;
  const collectL1 = (l1: Buffer, count: number, label: string, active: boolean): void => {
    for (let i = 0; i < count; i++) {
      const e = decodeL1(l1, i);
      const at = { table: label, idx: i };
      if (e.reservedBits) badEntry('L1 entries with reserved bits set', () => `L1 entry with reserved bits set: ${label}[${i}] = ${hex(Number(l1.readBigUInt64BE(i * 8) & 0xffffffffffffn))}`, 'L1 table', at);
      if (e.offset === 0) continue;
      if (e.offset % cs !== 0) {
        badEntry('L2 table offsets not cluster aligned', () => `L2 table offset ${hex(e.offset)} is not cluster aligned; L1 entry corrupted`, 'L1 table', at, e.offset);
        lostTables++;
        continue;
      }
      const known = l2Refs.get(e.offset);
      if (known) known.times++;
      else l2Refs.set(e.offset, { times: 1, field: `${label}[${i}]`, active });
    }
  };

  // qemu-img check's counts of the active tables' clusters
  let allocatedClusters = 0;
  let compressedClusters = 0;
  let fragmentedClusters = 0;
  const walkL2s = async (): Promise<void> => {
    const inside: number[] = [];
    for (const [off, r] of l2Refs) {
      const [, label, i] = /^(.*)\[(\d+)\]$/.exec(r.field)!;
      if (inc(off, cs, L2, 'L2 table', 'L1 table', r.field, r.times, { table: label!, idx: Number(i) })) inside.push(off);
      else lostTables++;
    }
    for await (const [off, l2] of readTables(img, inside)) {
      const r = l2Refs.get(off)!;
      const prefix = r.active ? 'l2' : `${r.field.replace(/\[\d+\]$/, '')}.l2`;
      const i = /\[(\d+)\]$/.exec(r.field)![1];
      const table = `${prefix}[${i}]`;
      const w = words(l2);
      let next = 0; // where the next data cluster would follow on (per table, as QEMU)
      // one position object per table, moved along (badEntry and inc read it at once; a table of
      // garbage has 8,192 bad entries, and one object each was most of a check's collection time)
      const at: EntryAt = { table, idx: 0 };
      for (let j = 0; j < g.l2Entries; j++) {
        if (emptyEntry(w, j, g.l2EntrySize)) continue;
        const x = decodeL2(l2, j, g);
        at.idx = j;
        if (r.active && (x.kind === 'compressed' || x.offset !== 0 || x.kind === 'normal')) {
          allocatedClusters++;
          // QEMU: compressed clusters are fragmented by nature; others when not after the previous one
          if (x.kind === 'compressed' || (next !== 0 && x.offset !== next)) fragmentedClusters++;
          if (x.kind !== 'compressed') next = x.offset + cs;
        }
        if (x.kind === 'compressed' && img.dataFile) {
          badEntry('compressed clusters in an image with an external data file', () => `compressed cluster in an image with an external data file: ${table}[${j}]`, 'L2 table', at, x.offset);
          continue;
        }
        if (x.kind === 'compressed') {
          if (r.active) compressedClusters++;
          if (x.copied) badEntry('compressed clusters with the COPIED flag', () => `compressed cluster with the COPIED flag: ${table}[${j}]`, 'L2 table', at, x.offset);
          if (x.allocMask !== 0 || x.zeroMask !== 0) badEntry('compressed clusters with a non-zero subcluster bitmap', () => `compressed cluster with a non-zero subcluster bitmap: ${table}[${j}]`, 'L2 table', at, x.offset);
          inc(x.offset, x.csize, DATA, 'compressed cluster', 'L2 table', undefined, r.times, at);
          continue;
        }
        if (g.l2EntrySize === 16) {
          if (x.allocMask & x.zeroMask) badEntry('subclusters both allocated and zero', () => `subclusters both allocated and zero: ${table}[${j}]`, 'L2 table', at);
          if (x.allocMask !== 0 && x.offset === 0) badEntry('allocated subclusters without a host cluster', () => `allocated subclusters without a host cluster: ${table}[${j}]`, 'L2 table', at);
        }
        if (x.offset === 0 && x.kind !== 'normal') continue;
        if (x.reservedBits) badEntry('L2 entries with reserved bits set', () => `L2 entry with reserved bits set: ${table}[${j}]`, 'L2 table', at, x.offset);
        if (x.offset % cs !== 0) {
          badEntry('data cluster offsets not cluster aligned', () => `data cluster offset ${hex(x.offset)} is not cluster aligned; L2 entry corrupted`, 'L2 table', at, x.offset);
          continue;
        }
        // data clusters in an external data file have no refcounts here (QEMU counts none)
        if (!img.dataFile) inc(x.offset, cs, DATA, 'data cluster', 'L2 table', undefined, r.times, at);
      }
    }
  };

  // ---- 1. references
  inc(0, cs, META, 'header', 'header', 'magic');
  const l1Offset = Number(h.l1_table_offset);
  if (h.l1_size > 0) inc(l1Offset, h.l1_size * 8, META, 'L1 table', 'header', 'l1_table_offset');
  collectL1(img.l1Table, h.l1_size, 'l1', true);

  if (img.snapshots.length > 0) {
    inc(Number(h.snapshots_offset), img.snapshotTableBytes, META, 'snapshot table', 'header', 'snapshots_offset');
    for (const s of img.snapshots) {
      const field = `snapshot[${s.index}]`;
      if (s.l1Size * 8 > MAX_L1_BYTES || s.l1Offset % cs !== 0 || (s.l1Size > 0 && s.l1Offset === 0)) {
        corrupt(`snapshot ${s.id} (${s.name}) has an invalid L1 table (offset ${hex(s.l1Offset)}, ${s.l1Size} entries)`, 'snapshot table', `${field}.l1_table_offset`, s.l1Offset);
        continue;
      }
      if (s.l1Size === 0) continue;
      if (!inc(s.l1Offset, s.l1Size * 8, META, `snapshot ${s.id} L1 table`, 'snapshot table', `${field}.l1_table_offset`)) continue;
      collectL1(await img.storeForCheck.readZeroPadded(s.l1Offset, s.l1Size * 8), s.l1Size, `${field}.l1`, false);
    }
  }
  await walkL2s();

  inc(refs.tableOffset, refs.tableClusters * cs, META, 'refcount table', 'header', 'refcount_table_offset');
  const blocks: (Buffer | null)[] = [];
  for (let rt = 0; rt < refs.tableEntries; rt++) {
    const off = refs.entry(rt);
    if (typeof off !== 'number') {
      const why = BAD_BLOCK_ENTRY[off.bad];
      badEntry(why, () => `${why} (refcount_table[${rt}] = ${hex(off.offset)}${off.bad === 'pastEnd' ? `, the file holds ${fileSize} bytes` : ''})`, 'refcount table', { table: 'refcount_table', idx: rt }, off.offset);
      blocks.push(null);
      continue;
    }
    if (off !== 0) inc(off, cs, META, 'refcount block', 'refcount table', `refcount_table[${rt}]`);
    blocks.push(off === 0 ? null : await refs.block(rt));
  }

  if ((h.autoclear_features & (1n << BigInt(AUTOCLEAR.BITMAPS))) !== 0n) await countBitmaps(img, inc, corrupt);

  // ---- 2. stored refcounts against the count
  const epb = refs.entriesPerBlock;
  const stored = (c: number): number => {
    const b = blocks[Math.floor(c / epb)];
    return b ? getRefcount(b, c - Math.floor(c / epb) * epb, refs.order) : 0;
  };
  const refcountLine = (noun: string, s: number, want: number) => (a: number, b: number) => ({ message: `${noun} ${span('cluster', a, b)} refcount=${s} reference=${want}`, field: fieldSpan('refcount', a, b) });
  const raise: number[] = [];
  const lower: number[] = [];
  let leakedClusters = 0;
  // the last cluster in use, as QEMU's image_end_offset: before a repair by either count, after
  // it by what is referenced (leaks freed) or still counted
  let highest = -1;
  let highestRepaired = -1;
  // the clusters of the file, and the one after it if something refers to it (as QEMU counts)
  const nb = ref[ref.length - 1]! > 0 ? ref.length : ref.length - 1;
  for (let c = 0; c < nb; c++) {
    if (role[c] === MIXED) {
      log.add('corruption', 'overlap', c, (a, b) => ({ message: `${span('cluster', a, b)} used by more than one structure, one of them metadata (an overlap: a write through one would change the other)`, field: fieldSpan('cluster', a, b) }), {
        struct: 'refcount block',
        offset: c * cs,
        ...flags(false),
      });
    }
    const s = stored(c);
    const want = ref[c]!;
    if (s > 0 || want > 0) highest = c;
    if (want > 0 || (s > 0 && lostTables > 0)) highestRepaired = c;
    if (s === want) continue;
    if (s > want) {
      const line = refcountLine('Leaked', s, want);
      const kept = (a: number, b: number) => {
        const t = line(a, b);
        return { ...t, message: `${t.message} (not freed: ${lostTables} L2 table${lostTables === 1 ? '' : 's'} could not be walked, so these clusters may hold their data)` };
      };
      log.add('leak', `${s}:${want}`, c, lostTables && opts.repair ? kept : line, { struct: 'refcount block', offset: c * cs, ...flags(lostTables === 0) });
      if (lostTables === 0) lower.push(c);
      leakedClusters++;
    } else {
      const fixable = role[c] === DATA || role[c] === L2;
      log.add('corruption', `${s}:${want}:${fixable}`, c, refcountLine('ERROR', s, want), { struct: 'refcount block', offset: c * cs, ...flags(fixable) });
      if (fixable) raise.push(c);
    }
  }
  // Refcounts of clusters past the end of the file (a writer killed after the refcount update,
  // before the data): QEMU does not look there, and they cost no space; but once the file
  // grows over them they are leaks, so they are reported as warnings and cleared by a repair.
  for (let rt = Math.floor(nb / epb); rt < blocks.length; rt++) {
    const b = blocks[rt];
    if (!b) continue;
    for (let c = Math.max(nb, rt * epb); c < (rt + 1) * epb; c++) {
      const s = getRefcount(b, c - rt * epb, refs.order);
      if (s === 0) continue;
      // a table that could not be walked, or an entry naming a cluster past the end, keeps these
      const keep = lostTables + pastEndRefs;
      const note = keep && opts.repair ? ` (not cleared: ${pastEndRefs} reference${pastEndRefs === 1 ? '' : 's'} past the end of the file, ${lostTables} L2 table${lostTables === 1 ? '' : 's'} not walked)` : '';
      log.add('warning', `past-eof:${s}`, c, (a, z) => ({ message: `${span('cluster', a, z)} past the end of the file ${a === z ? 'has' : 'have'} refcount=${s} reference=0${note}`, field: fieldSpan('refcount', a, z) }), {
        struct: 'refcount block',
        offset: c * cs,
        ...flags(keep === 0),
      });
      if (keep === 0) lower.push(c);
    }
  }

  // ---- repair of refcounts
  if (dryRun) {
    for (const c of raise) planned.set(c, ref[c]!);
    for (const c of lower) planned.set(c, c < nb ? ref[c]! : 0);
  }
  if (write) {
    // new refcount blocks go past everything referenced
    refs.freeIndex = Math.max(refs.freeIndex, nb);
    // blocks first (a new one may take a cluster whose count is then raised), then the counts
    for (const c of raise) await refs.ensureBlock(c);
    const values = new Map<number, number>();
    for (const c of raise) values.set(c, ref[c]!);
    for (const c of lower) values.set(c, c < nb ? ref[c]! : 0);
    await refs.setMany(values);
    refs.freeIndex = 0;
  }

  // ---- 3. COPIED flags of the active tables (against the refcounts as they now are); a
  // repair writes each L2 table's changed entries, and the L1 table's, in one write
  const memo = new Map<number, Buffer | null>();
  const refcountOf = async (c: number): Promise<number> => {
    const p = planned.get(c);
    if (p !== undefined) return p;
    const rt = Math.floor(c / epb);
    if (!memo.has(rt)) memo.set(rt, await refs.block(rt).catch(() => null));
    const b = memo.get(rt)!;
    return b ? getRefcount(b, c - rt * epb, refs.order) : 0;
  };
  const l1 = img.l1Table;
  const firstL1 = new Map<number, number>();
  const l1Fix: [number, number, boolean][] = [];
  for (let i = 0; i < h.l1_size; i++) {
    const e = decodeL1(l1, i);
    if (e.offset === 0 || e.offset % cs !== 0 || e.offset >= fileSize) continue;
    const rc = await refcountOf(e.offset / cs);
    if (e.copied !== (rc === 1)) {
      log.add('corruption', `copied-l1:${rc}`, i, (a, b) => ({ message: a === b ? `OFLAG_COPIED L2 cluster: l1_index=${a} l1_entry=${hex(e.offset)} refcount=${rc}` : `OFLAG_COPIED L2 clusters: l1_index=${a}..${b} refcount=${rc}`, field: fieldSpan('l1', a, b) }), {
        struct: 'L1 table',
        offset: e.offset,
        ...flags(true),
      });
      l1Fix.push([i, e.offset, rc === 1]);
    }
    if (!firstL1.has(e.offset)) firstL1.set(e.offset, i);
  }
  for await (const [off, l2] of readTables(img, firstL1.keys())) {
    const i = firstL1.get(off)!;
    let lo = Infinity;
    let hi = -1;
    const fixed = write ? Buffer.from(l2) : l2;
    const w = words(l2);
    for (let j = 0; j < g.l2Entries; j++) {
      if (emptyEntry(w, j, g.l2EntrySize)) continue;
      const x = decodeL2(l2, j, g);
      if (x.kind === 'compressed' || x.offset === 0 || x.offset % cs !== 0) continue;
      if (!img.dataFile && x.offset >= fileSize) continue;
      // a data file's cluster counts as used once (QEMU's check takes refcount 1 there)
      const rc2 = img.dataFile ? 1 : await refcountOf(x.offset / cs);
      if (x.copied === (rc2 === 1)) continue;
      log.add('corruption', `copied-l2:${i}:${rc2}`, j, (a, b) => ({ message: a === b ? `OFLAG_COPIED data cluster: l2_entry=${hex(x.offset)} refcount=${rc2}` : `OFLAG_COPIED data clusters: l2[${i}][${a}..${b}] refcount=${rc2}`, field: a === b ? `l2[${i}][${a}]` : `l2[${i}][${a}..${b}]` }), {
        struct: 'L2 table',
        offset: x.offset,
        ...flags(true),
      });
      const at = j * g.l2EntrySize;
      fixed[at] = rc2 === 1 ? fixed[at]! | 0x80 : fixed[at]! & 0x7f;
      lo = Math.min(lo, at);
      hi = at + 8;
    }
    if (write && hi > 0) await img.writeL2Bytes(off, lo, fixed.subarray(lo, hi));
  }
  if (write && l1Fix.length > 0) await img.writeL1Entries(l1Fix);

  const findings: CheckFinding[] = log.all();
  if (write && !findings.some((f) => f.kind !== 'warning' && !f.repaired)) await img.clearDirty();
  if (write) await img.flush();
  const leakedBytes = write ? 0 : leakedClusters * cs;
  const stats = { totalClusters: Math.ceil(img.capacity / cs), allocatedClusters, compressedClusters, fragmentedClusters, imageEndOffset: ((write ? highestRepaired : highest) + 1) * cs };
  return { path: img.path, format: 'qcow2', findings, leakedBytes, stats, ...(dryRun ? { dryRun: true } : {}) };
}

/** Bitmap directory, bitmap tables and their data clusters (only when the autoclear bit says they are valid). */
async function countBitmaps(
  img: Qcow2State,
  inc: (offset: number, size: number, r: number, what: string, struct: string, field?: string) => boolean,
  corrupt: (message: string, struct: string, field?: string, offset?: number) => void,
): Promise<void> {
  const ext = img.extension(EXT.BITMAPS);
  if (!ext || ext.length < 24) return;
  const store = img.storeForCheck;
  const cs = img.clusterSize;
  const count = ext.readUInt32BE(0);
  const dirSize = Number(ext.readBigUInt64BE(8));
  const dirOffset = Number(ext.readBigUInt64BE(16));
  if (dirSize > 64 * 1024 * 1024 || dirOffset % cs !== 0) {
    corrupt('invalid bitmap directory', 'bitmaps extension', 'bitmap_directory_offset', dirOffset);
    return;
  }
  if (!inc(dirOffset, dirSize, META, 'bitmap directory', 'bitmaps extension', 'bitmap_directory_offset')) return;
  const dir = await store.readZeroPadded(dirOffset, dirSize);
  let at = 0;
  for (let i = 0; i < count && at + 24 <= dir.length; i++) {
    const tableOffset = Number(dir.readBigUInt64BE(at) & 0x00fffffffffffe00n);
    const tableSize = dir.readUInt32BE(at + 8);
    const nameSize = dir.readUInt16BE(at + 18);
    const extraSize = dir.readUInt32BE(at + 20);
    const field = `bitmap[${i}]`;
    if (tableSize * 8 > 64 * 1024 * 1024 || tableOffset % cs !== 0) corrupt(`bitmap ${i} has an invalid table`, 'bitmap directory', field, tableOffset);
    else if (tableSize > 0 && inc(tableOffset, tableSize * 8, META, `bitmap ${i} table`, 'bitmap directory', field)) {
      const t = await store.readZeroPadded(tableOffset, tableSize * 8);
      for (let k = 0; k < tableSize; k++) {
        const off = Number(t.readBigUInt64BE(k * 8) & 0x00fffffffffffe00n);
        if (off !== 0) inc(off, cs, DATA, `bitmap ${i} data`, 'bitmap table', `${field}[${k}]`);
      }
    }
    at += Math.ceil((24 + extraSize + nameSize) / 8) * 8;
  }
}
