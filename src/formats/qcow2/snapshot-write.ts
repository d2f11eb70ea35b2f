/**
 * Internal snapshots created, applied and deleted (qemu-img snapshot -c / -a / -d; QEMU's
 * qcow2-snapshot.c). Refcounts count paths, as QEMU's update_snapshot_refcount and check do:
 * every L1 table (the active one and each snapshot's) adds one to each L2 table it names and one
 * to each cluster those tables name, so a cluster shared by the active tables and two snapshots
 * has refcount 3. COPIED (bit 63) is set exactly where the refcount is 1.
 *
 * Crash-safe order (NOTES.md "Internal snapshots"): refcounts are raised before anything names
 * the clusters, COPIED flags are cleared only after the refcounts they describe are written and
 * set only after they are lowered, the header switches to a new snapshot table in one write,
 * and refcounts are lowered last: a process killed anywhere leaves at worst leaked clusters.
 */
import { DiskError } from '../../core/errors.js';
import type { SnapshotEntry } from '../types.js';
import { growL1 } from './resize.js';
import { encodeSnapshotEntry, encodeSnapshotTable, type SnapshotInfo } from './snapshots.js';
import { refuseWithBitmaps } from './bitmap-write.js';
import type { Qcow2State } from './state.js';
import { COPIED_HI, decodeL1, decodeL2, encodeL1 } from './structs.js';

/** The list as the ops layer sees it. */
export function listSnapshots(this: Qcow2State): SnapshotEntry[] {
  return this.snapshots.map((s) => ({
    id: s.id,
    name: s.name,
    vmStateSize: s.vmStateSize,
    date: new Date(s.date * 1000 + Math.floor(s.dateNsec / 1e6)),
    vmClockNsec: s.vmClockNsec,
    icount: s.icount,
    diskSize: s.diskSize,
  }));
}

/** qemu-img's lookup: an id first, then a name (the first snapshot with it). */
function find(this: Qcow2State, nameOrId: string): SnapshotInfo {
  const s = this.snapshots.find((x) => x.id === nameOrId) ?? this.snapshots.find((x) => x.name === nameOrId);
  if (!s) throw new DiskError('INVAL', `no snapshot with the id or name "${nameOrId}"`, { path: this.path, struct: 'snapshot table', field: 'snapshot', found: nameOrId, expected: this.snapshots.map((x) => `${x.id} (${x.name})`).join(', ') || 'none' });
  return s;
}

/** An L2 table by offset: cached, else read (bounds checked, as loadL2 does). */
async function l2At(this: Qcow2State, offset: number, field: string): Promise<Buffer> {
  const hit = this.l2Cache.get(offset);
  if (hit) return hit;
  if (offset % this.clusterSize !== 0 || offset + this.clusterSize > this.file.size) {
    throw new DiskError('CORRUPT', 'L2 table offset is not cluster aligned or lies past the end of the file', { path: this.path, struct: 'L1 table', field, found: offset });
  }
  const t = await this.store.read(offset, this.clusterSize);
  this.cacheL2(offset, t);
  return t;
}

/** Every cluster the tables under this L1 name, once per reference (L2 tables and their clusters). */
async function references(this: Qcow2State, l1: Buffer, entries: number, name: string): Promise<number[]> {
  const cs = this.clusterSize;
  const out: number[] = [];
  for (let i = 0; i < entries; i++) {
    const e = decodeL1(l1, i);
    if (e.offset === 0) continue;
    out.push(e.offset / cs);
    const t = await l2At.call(this, e.offset, `${name}[${i}]`);
    for (let j = 0; j < this.g.l2Entries; j++) {
      const d = decodeL2(t, j, this.g);
      if (d.kind === 'compressed') {
        for (let c = Math.floor(d.offset / cs); c <= Math.floor((d.offset + d.csize - 1) / cs); c++) out.push(c);
      } else if (d.offset !== 0) out.push(d.offset / cs);
    }
  }
  return out;
}

/**
 * COPIED set where the refcount is 1 and cleared elsewhere, in the L2 tables under `l1` and in
 * `l1` itself (changed entries only: one write per L2 table; the L1 entries are left to the
 * caller through `writeL1`).
 */
async function syncCopied(this: Qcow2State, l1: Buffer, entries: number, name: string): Promise<number[]> {
  const cs = this.clusterSize;
  const changedL1: number[] = [];
  for (let i = 0; i < entries; i++) {
    const e = decodeL1(l1, i);
    if (e.offset === 0) continue;
    const copied = (await this.refs.get(e.offset / cs)) === 1;
    if (copied !== e.copied) {
      encodeL1(l1, i, e.offset, copied);
      changedL1.push(i);
    }
    const t = await l2At.call(this, e.offset, `${name}[${i}]`);
    let lo = Infinity;
    let hi = -1;
    for (let j = 0; j < this.g.l2Entries; j++) {
      const d = decodeL2(t, j, this.g);
      if (d.kind === 'compressed' || d.offset === 0) continue;
      const want = (await this.refs.get(d.offset / cs)) === 1;
      if (want === d.copied) continue;
      const at = j * this.g.l2EntrySize;
      t.writeUInt32BE((want ? t.readUInt32BE(at) | COPIED_HI : t.readUInt32BE(at) & ~COPIED_HI) >>> 0, at);
      lo = Math.min(lo, at);
      hi = Math.max(hi, at + 8);
    }
    if (hi > 0) await this.writeL2Bytes(e.offset, lo, Buffer.from(t.subarray(lo, hi)));
  }
  return changedL1;
}

/** syncCopied over the active tables, the changed L1 entries written in one write. */
async function syncActive(this: Qcow2State): Promise<void> {
  const changed = await syncCopied.call(this, this.l1, this.h.l1_size, 'l1');
  if (changed.length === 0) return;
  // changed is in ascending order (syncCopied walks the table); no spread: it may hold millions
  const lo = changed[0]!;
  const hi = changed[changed.length - 1]! + 1;
  await this.store.write(Number(this.h.l1_table_offset) + lo * 8, this.l1.subarray(lo * 8, hi * 8));
}

/** A copy of an L1 table with every COPIED flag clear (what a snapshot's table holds). */
function withoutCopied(l1: Buffer, entries: number): Buffer {
  const out = Buffer.from(l1.subarray(0, entries * 8));
  for (let i = 0; i < entries; i++) out.writeUInt32BE((out.readUInt32BE(i * 8) & ~COPIED_HI) >>> 0, i * 8);
  return out;
}

/**
 * Write a new snapshot table in fresh clusters, switch the header to it (nb_snapshots and
 * snapshots_offset are adjacent: one 12-byte write), then free the old table's clusters.
 */
async function writeTable(this: Qcow2State, list: SnapshotInfo[]): Promise<void> {
  const cs = this.clusterSize;
  const bytes = encodeSnapshotTable(list.map((s) => s.raw));
  let at = 0;
  if (list.length > 0) {
    at = await this.refs.alloc(Math.ceil(bytes.length / cs));
    await this.writeRaw(at, bytes);
    await this.store.flush();
  }
  const old = { offset: Number(this.h.snapshots_offset), bytes: this.snapshotTableBytes, count: this.h.nb_snapshots };
  this.h.nb_snapshots = list.length;
  this.h.snapshots_offset = BigInt(at);
  await this.writeHeaderFields(['nb_snapshots', 'snapshots_offset']);
  await this.store.flush();
  this.snapshots = list.map((s, index) => ({ ...s, index }));
  this.snapshotTableBytes = bytes.length;
  if (old.count > 0 && old.offset !== 0) await this.refs.update(old.offset / cs, Math.ceil(old.bytes / cs), -1);
}

/** The id QEMU gives a new snapshot: one more than the highest numeric id. */
function nextId(list: readonly SnapshotInfo[]): string {
  let max = 0;
  for (const s of list) {
    const n = /^\d+$/.test(s.id) ? Number(s.id) : 0;
    if (n > max) max = n;
  }
  return String(max + 1);
}

/**
 * Create: 1. +1 for every L2 table and cluster the active L1 table names; 2. that table copied
 * (COPIED clear) into fresh clusters; flush; 3. COPIED cleared where the refcount is now above 1;
 * flush; 4. the table with the new record written, then the header (writeTable). Killed before
 * 4, the image is as before with leaked clusters and some COPIED flags clear (a copy on the
 * next write of those clusters).
 */
export async function createSnapshot(this: Qcow2State, name: string, opts: { date?: Date } = {}): Promise<SnapshotEntry> {
  this.refuseDataFile('an internal snapshot');
  await this.prepareWrite();
  if (name === '') throw new DiskError('INVAL', 'a snapshot needs a name', { path: this.path, field: 'name' });
  if (Buffer.byteLength(name) > 0xffff) throw new DiskError('INVAL', 'snapshot name longer than 65535 bytes', { path: this.path, struct: 'snapshot', field: 'name_size', found: Buffer.byteLength(name) });
  const cs = this.clusterSize;
  const entries = this.h.l1_size;
  const refs = await references.call(this, this.l1, entries, 'l1');
  const copy = withoutCopied(this.l1, entries);
  // first, so that a refcount that cannot count one more reference refuses before any change
  await this.refs.adjustMany(refs, 1);
  const l1Clusters = Math.ceil((entries * 8) / cs);
  // an image of size 0 has no L1 table: neither has its snapshot (offset 0, as check expects)
  const l1At = l1Clusters === 0 ? 0 : await this.refs.alloc(l1Clusters);
  await this.writeRaw(l1At, copy);
  await this.store.flush();
  await syncActive.call(this);
  await this.store.flush();
  const id = nextId(this.snapshots);
  const date = opts.date ?? new Date();
  const raw = encodeSnapshotEntry({ l1Offset: l1At, l1Size: entries, id, name, date, diskSize: this.capacity });
  const info: SnapshotInfo = { index: this.snapshots.length, id, name, l1Offset: l1At, l1Size: entries, date: Math.floor(date.getTime() / 1000), dateNsec: (date.getTime() % 1000) * 1e6, vmStateSize: 0, vmClockNsec: 0, icount: 0, diskSize: this.capacity, raw };
  await writeTable.call(this, [...this.snapshots, info]);
  await this.store.flush();
  return listSnapshots.call(this).at(-1)!;
}

/**
 * Apply (revert to) a snapshot: 1. +1 for everything its tables name; flush; 2. COPIED cleared
 * in its L2 tables (all shared now); flush; 3. the active L1 table overwritten with the
 * snapshot's entries in one write; flush; 4. -1 for everything the old active tables named;
 * flush; 5. COPIED set again where the refcount is 1. Killed before 3: leaks; after it: the
 * snapshot's data is the disk, the old active clusters leak until 4.
 */
export async function applySnapshot(this: Qcow2State, nameOrId: string): Promise<void> {
  refuseWithBitmaps.call(this, 'applying a snapshot');
  await this.prepareWrite();
  const s = find.call(this, nameOrId);
  if (s.diskSize !== undefined && s.diskSize !== this.capacity) {
    throw new DiskError('NOTSUPPORTED', `snapshot "${s.name}" was taken at another disk size (${s.diskSize} bytes, now ${this.capacity}): resize to that size first`, { path: this.path, struct: 'snapshot', field: 'disk_size', expected: this.capacity, found: s.diskSize });
  }
  await growL1.call(this, s.l1Size);
  const snapL1 = await this.store.read(s.l1Offset, s.l1Size * 8);
  await this.refs.adjustMany(await references.call(this, snapL1, s.l1Size, `snapshot[${s.index}].l1`), 1);
  await this.store.flush();
  await syncCopied.call(this, snapL1, s.l1Size, `snapshot[${s.index}].l1`);
  await this.store.flush();
  const old = this.l1;
  const oldEntries = this.h.l1_size;
  const next = Buffer.alloc(old.length);
  withoutCopied(snapL1, s.l1Size).copy(next);
  await this.store.write(Number(this.h.l1_table_offset), next);
  this.l1 = next;
  this.inflated.clear();
  await this.store.flush();
  await this.refs.adjustMany(await references.call(this, old, oldEntries, 'l1'), -1);
  await this.store.flush();
  await syncActive.call(this);
  await this.store.flush();
}

/**
 * Delete: 1. the table without the record written, then the header (writeTable); 2. -1 for
 * everything the snapshot's tables name and for its L1 table's clusters; flush; 3. COPIED set
 * on the active entries whose refcount is 1 now. Killed after 1, the snapshot's clusters leak.
 */
export async function deleteSnapshot(this: Qcow2State, nameOrId: string): Promise<void> {
  await this.prepareWrite();
  const s = find.call(this, nameOrId);
  const cs = this.clusterSize;
  const snapL1 = await this.store.read(s.l1Offset, s.l1Size * 8);
  const refs = await references.call(this, snapL1, s.l1Size, `snapshot[${s.index}].l1`);
  await writeTable.call(this, this.snapshots.filter((x) => x !== s));
  refs.push(...Array.from({ length: Math.ceil((s.l1Size * 8) / cs) }, (_, k) => s.l1Offset / cs + k));
  await this.refs.adjustMany(refs, -1);
  await this.store.flush();
  await syncActive.call(this);
  await this.store.flush();
}
