/**
 * Repair step 0 (check.ts): clusters the active tables name more than once, or name as data
 * while metadata lives there, get their own copies.
 *
 * QEMU's `check -r all` raises such a cluster's refcount to the number of references and clears
 * COPIED, so the next write copies it. With two active entries that leaves a state the write
 * after breaks: the writer's entry moves to a new cluster, the old cluster drops to refcount 1,
 * and the other entry still says "not COPIED" (check: corrupt again). A copy per extra
 * reference keeps what every entry reads and leaves each active cluster with refcount 1 and
 * COPIED set, which stays consistent whatever is written next.
 *
 * Who keeps the cluster: metadata (header, L1, refcount table and blocks, snapshot table and
 * L1 tables) over L2 tables, L2 tables (the first active L1 entry; snapshots share theirs
 * legitimately) over data, and the first active data entry over later ones. An L1 entry naming
 * metadata is not mended here (reading metadata as an L2 table makes no sense to copy): the
 * reference count pass reports it as an overlap that cannot be repaired.
 *
 * Crash order: the copies' refcounts (past everything referenced), the copies, fdatasync, then
 * the entries (one write per L2 table, one for the L1 entries), fdatasync. A kill leaves the old
 * sharing (which this repair finds again) plus leaked copies.
 */
import { DiskError } from '../../core/errors.js';
import { fieldSpan } from '../common/findings.js';
import type { FindingLog } from '../common/findings.js';
import type { Qcow2State } from './state.js';
import { decodeL1, decodeL2, encodeL2 } from './structs.js';
import { emptyEntry, readTables, words } from './tables.js';

const META = 1;
const SNAP_L2 = 2;
const ACTIVE_L2 = 4;
const ACTIVE_DATA = 8;

const hex = (n: number) => `0x${n.toString(16)}`;
/** clusters copied per batch (read, written, then their entries) */
const BATCH = 64;

export async function separateSharedActive(img: Qcow2State, log: FindingLog, opts: { dryRun: boolean }): Promise<void> {
  const g = img.geometry;
  if (g.l2EntrySize !== 8) return; // extended L2 images are never written
  const cs = g.clusterSize;
  const h = img.header;
  const n = Math.ceil(img.fileSize / cs);
  const mark = new Uint8Array(n);
  // new clusters go past every cluster anything names, even past the end of the file
  let top = n;
  const markRange = (offset: number, bytes: number, v: number) => {
    if (bytes <= 0 || !Number.isSafeInteger(offset + bytes)) return;
    const last = Math.floor((offset + bytes - 1) / cs);
    top = Math.max(top, last + 1);
    for (let c = Math.floor(offset / cs); c <= Math.min(last, n - 1); c++) mark[c]! |= v;
  };
  markRange(0, cs, META);
  if (h.l1_size > 0) markRange(Number(h.l1_table_offset), h.l1_size * 8, META);
  const refs = img.refs;
  markRange(refs.tableOffset, refs.tableClusters * cs, META);
  for (let rt = 0; rt < refs.tableEntries; rt++) {
    try {
      const off = refs.blockOffset(rt);
      if (off !== 0) markRange(off, cs, META);
    } catch (err) {
      if (!(err instanceof DiskError)) throw err; // the count pass reports it
    }
  }
  if (img.snapshots.length > 0) {
    markRange(Number(h.snapshots_offset), img.snapshotTableBytes, META);
    for (const s of img.snapshots) {
      if (s.l1Size === 0 || s.l1Offset % cs !== 0 || s.l1Offset + s.l1Size * 8 > img.fileSize) continue;
      markRange(s.l1Offset, s.l1Size * 8, META);
      const l1 = await img.storeForCheck.readZeroPadded(s.l1Offset, s.l1Size * 8);
      for (let i = 0; i < s.l1Size; i++) {
        const e = decodeL1(l1, i);
        if (e.offset !== 0 && e.offset % cs === 0) markRange(e.offset, cs, SNAP_L2);
      }
    }
  }

  // ---- active L2 tables: the first L1 entry keeps a table, later ones get a copy
  const l1 = img.l1Table;
  const tableOf = new Map<number, number>(); // L2 offset -> first L1 index
  const copyTable: number[] = []; // L1 indexes whose table is copied
  for (let i = 0; i < h.l1_size; i++) {
    const e = decodeL1(l1, i);
    if (e.offset === 0 || e.offset % cs !== 0) continue;
    const c = e.offset / cs;
    top = Math.max(top, c + 1);
    if (c >= n || mark[c]! & META) continue;
    if (mark[c]! & ACTIVE_L2) {
      copyTable.push(i);
      log.add('corruption', `shared-l2:${hex(e.offset)}`, i, (a, b) => ({ message: `L2 table ${hex(e.offset)} named by ${fieldSpan('l1', a, b)} is also named by l1[${tableOf.get(e.offset)}]: ${a === b ? 'it gets' : 'they get'} a copy of it and of its data`, field: fieldSpan('l1', a, b) }), {
        struct: 'L1 table',
        offset: e.offset,
        ...(opts.dryRun ? { wouldRepair: true } : { repaired: true }),
      });
      continue;
    }
    mark[c]! |= ACTIVE_L2;
    tableOf.set(e.offset, i);
  }

  // ---- data: entries naming metadata, an L2 table, or a cluster an earlier entry names
  interface Fix {
    /** L2 table offset (an existing table) or -1 - L1 index (a table being copied) */
    table: number;
    j: number;
    from: number;
    to: number;
  }
  const fixes: Fix[] = [];
  const tables = new Map<number, Buffer>(); // tables with fixes (or copied), by offset
  for await (const [off, t] of readTables(img, tableOf.keys())) {
    const i = tableOf.get(off)!;
    const w = words(t);
    for (let j = 0; j < g.l2Entries; j++) {
      if (emptyEntry(w, j, 8)) continue;
      const x = decodeL2(t, j, g);
      if (x.kind === 'compressed' || x.offset === 0 || x.offset % cs !== 0) continue;
      const c = x.offset / cs;
      top = Math.max(top, c + 1);
      if (c >= n) continue;
      if (mark[c]! & (META | SNAP_L2 | ACTIVE_L2 | ACTIVE_DATA)) {
        fixes.push({ table: off, j, from: x.offset, to: x.kind === 'zero' ? 0 : -1 });
        tables.set(off, t);
        const what = mark[c]! & ACTIVE_DATA ? 'named by an earlier active L2 entry too' : mark[c]! & META ? 'where metadata lives' : 'where an L2 table lives';
        log.add('corruption', `shared-data:${i}:${what}`, j, (a, b) => ({ message: `${a === b ? `data cluster ${hex(x.offset)}` : 'data clusters'} of ${fieldSpan(`l2[${i}]`, a, b)} ${what}: ${a === b ? 'it gets its own copy' : 'they get their own copies'}`, field: fieldSpan(`l2[${i}]`, a, b) }), {
          struct: 'L2 table',
          offset: x.offset,
          ...(opts.dryRun ? { wouldRepair: true } : { repaired: true }),
        });
      } else mark[c]! |= ACTIVE_DATA;
    }
  }
  for (const i of copyTable) {
    const off = decodeL1(l1, i).offset;
    const t = (await img.storeForCheck.readZeroPadded(off, cs)) as Buffer;
    tables.set(-1 - i, t);
    for (let j = 0; j < g.l2Entries; j++) {
      const x = decodeL2(t, j, g);
      if (x.kind === 'compressed' || x.offset === 0 || x.offset % cs !== 0) continue;
      fixes.push({ table: -1 - i, j, from: x.offset, to: x.kind === 'zero' ? 0 : -1 });
    }
  }
  if (opts.dryRun || (fixes.length === 0 && copyTable.length === 0)) return;

  // ---- the copies
  const copies = fixes.filter((f) => f.to === -1);
  refs.freeIndex = top;
  const first = (copies.length + copyTable.length) > 0 ? await refs.alloc(copies.length + copyTable.length) : 0;
  refs.freeIndex = 0;
  copies.forEach((f, k) => (f.to = first + k * cs));
  for (let k = 0; k < copies.length; k += BATCH) {
    const batch = copies.slice(k, k + BATCH);
    const bytes = Buffer.alloc(batch.length * cs);
    for (let b = 0; b < batch.length; b++) {
      const src = batch[b]!.from;
      if (src < img.fileSize) (await img.storeForCheck.readZeroPadded(src, cs)).copy(bytes, b * cs);
    }
    await img.writeRaw(batch[0]!.to, bytes);
  }
  const tableAt = new Map<number, number>();
  copyTable.forEach((i, k) => tableAt.set(i, first + (copies.length + k) * cs));
  for (const f of fixes) {
    const t = tables.get(f.table)!;
    encodeL2(t, f.j, g, f.to, f.to === 0 ? { zero: true } : { copied: true });
  }
  for (const [i, at] of tableAt) await img.writeRaw(at, tables.get(-1 - i)!);
  await img.flush();
  for (const [off, t] of tables) if (off >= 0) await img.writeL2Bytes(off, 0, t);
  await img.writeL1Entries([...tableAt].map(([i, at]) => [i, at, true]));
  await img.flush();
}
