/**
 * qcow2 persistent dirty bitmaps, write side: qemu-img bitmap's operations (add, remove, clear,
 * enable, disable, merge) and the recording of vdkit's own writes in the enabled bitmaps.
 *
 * Every change is written copy-on-write, as QEMU's qcow2-bitmap.c does: new bitmap tables and
 * data clusters for the bitmaps whose bits changed, a new directory, flush; then the extension
 * (and autoclear bit 0) in cluster 0 names the new directory, flush; then the old directory and
 * the tables and data no bitmap uses any more are freed. A kill before the header write leaves
 * the old bitmaps and leaked clusters, after it the new ones and leaked clusters.
 *
 * Recording writes (QEMU's scheme): before the first guest write, every enabled bitmap that is
 * consistent gets its bits loaded and in_use set in the directory (rewritten in place: only flag
 * words change, each inside one sector), flush. Writes set bits in memory. At close the bits are
 * stored as above with in_use cleared. A process killed in between leaves in_use set: the
 * bitmap is inconsistent from then on (info shows flags ["in-use", ...]; only remove works),
 * exactly what QEMU leaves and reports.
 */
import { DiskError } from '../../core/errors.js';
import { BITMAP_TYPE_DIRTY, BME, BitmapsExtension, bitmapInfo, encodeBitmapDirectory, granuleCount, loadBits, markBytes, MAX_BITMAP_NAME, MAX_BITMAPS, MAX_GRANULARITY_BITS, MIN_GRANULARITY_BITS, type Qcow2Bitmap, readBitmapTable, setRanges, tableEntriesFor, TABLE_OFFSET_MASK, unkeepable } from './bitmaps.js';
import type { PersistentBitmaps } from '../types.js';
import type { Qcow2State } from './state.js';
import { AUTOCLEAR, encodeHeaderArea, EXT, headerAreaSize, V2_HEADER_LENGTH } from './structs.js';

const pad8 = (n: number) => Math.ceil(n / 8) * 8;
const BITMAPS_BIT = 1n << BigInt(AUTOCLEAR.BITMAPS);
/** extensions QEMU writes before the bitmaps extension (qcow2.md §3) */
const BEFORE_BITMAPS = new Set<number>([EXT.BACKING_FORMAT, EXT.DATA_FILE, EXT.CRYPTO, EXT.FEATURE_TABLE]);

function geometryOf(s: Qcow2State) {
  return { clusterSize: s.clusterSize, capacity: s.capacity };
}

async function bitsOf(s: Qcow2State, b: Qcow2Bitmap): Promise<Buffer> {
  return loadBits(s.path, s.store, b, s.file.size, geometryOf(s));
}

/** Clusters a bitmap's table and data use (the table's entries read and checked). */
async function clustersOf(s: Qcow2State, tableOffset: number, tableSize: number, name: string): Promise<number[]> {
  const cs = s.clusterSize;
  const out: number[] = [];
  for (let c = 0; c < Math.ceil((tableSize * 8) / cs); c++) out.push(tableOffset / cs + c);
  const table = await readBitmapTable(s.path, s.store, { name, tableOffset, tableSize } as Qcow2Bitmap, s.file.size, cs);
  for (const v of table) {
    const off = Number(v & TABLE_OFFSET_MASK);
    if (off !== 0) out.push(off / cs);
  }
  return out;
}

/**
 * The bitmaps extension (or none) and autoclear bit 0 in cluster 0: 24 bytes in place when the
 * live extension is there already, else cluster 0's area rewritten in one write (a stale
 * extension a bitmap-unaware writer left is dropped, as QEMU drops it).
 */
async function writeBitmapsHeader(s: Qcow2State, ext: Buffer | undefined): Promise<void> {
  const headerLength = s.h.version === 2 ? V2_HEADER_LENGTH : s.h.header_length;
  const i = s.exts.findIndex((e) => e.type === EXT.BITMAPS);
  if (ext && i >= 0 && (s.h.autoclear_features & BITMAPS_BIT) !== 0n && s.exts[i]!.data.length === ext.length) {
    let at = headerLength;
    for (let k = 0; k < i; k++) at += 8 + pad8(s.exts[k]!.data.length);
    await s.store.write(at + 8, ext);
    s.exts[i] = { type: EXT.BITMAPS, data: ext };
    return;
  }
  const exts = s.exts.filter((e) => e.type !== EXT.BITMAPS);
  if (ext) {
    let at = 0;
    for (let k = 0; k < exts.length; k++) if (BEFORE_BITMAPS.has(exts[k]!.type)) at = k + 1;
    exts.splice(at, 0, { type: EXT.BITMAPS, data: ext });
  }
  const name = s.backingName === undefined ? undefined : Buffer.from(s.backingName, 'utf8');
  const need = headerAreaSize(headerLength, exts, name);
  if (need > s.clusterSize) {
    throw new DiskError('NOSPACE', 'the header, its extensions and the backing file name do not fit in cluster 0 with a bitmaps extension', { path: s.path, struct: 'header', field: 'bitmaps extension', expected: `<= ${s.clusterSize} bytes`, found: need });
  }
  const autoclear = s.h.autoclear_features;
  s.h.autoclear_features = ext ? autoclear | BITMAPS_BIT : autoclear & ~BITMAPS_BIT;
  const area = encodeHeaderArea(s.h, s.headerTail, exts, name);
  const out = Buffer.alloc(Math.max(area.length, s.headerArea));
  area.copy(out);
  try {
    await s.store.write(0, out);
  } catch (err) {
    s.h.autoclear_features = autoclear;
    throw err;
  }
  s.exts = exts;
  s.headerArea = area.length;
}

/**
 * Write `list` as the image's bitmaps (order kept): new tables for the changed ones, a new
 * directory, the header, then the old structures freed (file header comment).
 */
export async function commitBitmaps(this: Qcow2State, list: Qcow2Bitmap[]): Promise<void> {
  const cs = this.clusterSize;
  const old = this.bitmaps;
  const oldTables = (old?.list ?? []).filter((b) => b.tableOffset !== 0).map((b) => ({ offset: b.tableOffset, size: b.tableSize, name: b.name }));
  for (const b of list) {
    if (!b.changed) continue;
    const bits = b.bits!;
    const entries = Buffer.alloc(b.tableSize * 8);
    const nonzero: number[] = [];
    for (let k = 0; k < b.tableSize; k++) {
      const chunk = bits.subarray(k * cs, (k + 1) * cs);
      if (chunk.some((x) => x !== 0)) nonzero.push(k);
    }
    if (nonzero.length > 0) {
      const at = await this.refs.alloc(nonzero.length);
      const data = Buffer.alloc(nonzero.length * cs);
      nonzero.forEach((k, n) => {
        bits.copy(data, n * cs, k * cs, Math.min(bits.length, (k + 1) * cs));
        entries.writeBigUInt64BE(BigInt(at + n * cs), k * 8);
      });
      await this.writeRaw(at, data);
    }
    const tableAt = await this.refs.alloc(Math.ceil(entries.length / cs));
    await this.writeRaw(tableAt, Buffer.concat([entries, Buffer.alloc(Math.ceil(entries.length / cs) * cs - entries.length)]));
    b.tableOffset = tableAt;
    b.changed = false;
  }
  let ext: Buffer | undefined;
  let dirOffset = 0;
  let dirSize = 0;
  if (list.length > 0) {
    const dir = encodeBitmapDirectory(list);
    const n = Math.ceil(dir.length / cs);
    dirOffset = await this.refs.alloc(n);
    dirSize = dir.length;
    await this.writeRaw(dirOffset, Buffer.concat([dir, Buffer.alloc(n * cs - dir.length)]));
    ext = BitmapsExtension.encode({ nb_bitmaps: list.length, reserved32: 0, bitmap_directory_size: BigInt(dirSize), bitmap_directory_offset: BigInt(dirOffset) });
  }
  await this.store.flush();
  await writeBitmapsHeader(this, ext);
  await this.store.flush();
  // the old directory and every table (with its data) no bitmap names any more
  const free: number[] = [];
  if (old) for (let c = 0; c < Math.ceil(old.dirSize / cs); c++) free.push(old.dirOffset / cs + c);
  const kept = new Set(list.map((b) => b.tableOffset));
  for (const t of oldTables) if (!kept.has(t.offset)) free.push(...(await clustersOf(this, t.offset, t.size, t.name)));
  if (free.length > 0) {
    await this.refs.decrementMany(free);
    await this.store.flush();
  }
  this.bitmaps = list.length > 0 ? { list, dirOffset, dirSize, armed: old?.armed } : undefined;
}

/**
 * Before the first guest write: the enabled, consistent bitmaps get their bits loaded and
 * in_use set on disk (directory rewritten in place, flushed) so that a kill leaves them marked
 * inconsistent rather than silently stale.
 */
export async function armBitmaps(this: Qcow2State): Promise<void> {
  const set = this.bitmaps;
  if (!set || set.armed) return;
  const enabled = set.list.filter((b) => (b.flags & BME.AUTO) !== 0 && !b.inconsistent);
  for (const b of enabled) await bitsOf(this, b);
  if (enabled.length > 0) {
    for (const b of enabled) {
      b.flags |= BME.IN_USE;
      b.tracking = true;
    }
    const dir = encodeBitmapDirectory(set.list);
    if (dir.length !== set.dirSize) throw new DiskError('INTERNAL', 'bitmap directory changed size when only flags changed', { path: this.path, expected: set.dirSize, found: dir.length });
    await this.store.write(set.dirOffset, dir);
    await this.store.flush();
  }
  set.armed = true;
}

/** Record a guest write (or discard) of [offset, offset+length) in the bitmaps being tracked. */
export function markDirty(this: Qcow2State, offset: number, length: number): void {
  for (const b of this.bitmaps?.list ?? []) {
    if (!b.tracking) continue;
    markBytes(b.bits!, b.granularityBits, offset, Math.min(length, this.capacity - offset));
    b.changed = true;
  }
}

/** At close: the tracked bitmaps stored and in_use cleared (commitBitmaps' order). */
export async function storeTracked(this: Qcow2State): Promise<void> {
  const set = this.bitmaps;
  if (!set?.list.some((b) => b.tracking)) return;
  for (const b of set.list) {
    if (!b.tracking) continue;
    b.flags &= ~BME.IN_USE;
    b.tracking = false;
    b.changed = true;
  }
  set.armed = false;
  await commitBitmaps.call(this, [...set.list]);
}

/** A refusal for operations that would change the disk without the bitmaps following it. */
export function refuseWithBitmaps(this: Qcow2State, what: string): void {
  if (!this.bitmaps) return;
  throw new DiskError('NOTSUPPORTED', `${what}: not for an image with persistent bitmaps (QEMU refuses too; remove them first: vdkit bitmap --remove)`, { path: this.path, struct: 'bitmaps extension', field: 'nb_bitmaps', found: this.bitmaps.list.length });
}

export function bitmapOps(s: Qcow2State): PersistentBitmaps {
  const find = (name: string) => {
    const b = s.bitmaps?.list.find((x) => x.name === name);
    if (!b) throw new DiskError('INVAL', `no bitmap named '${name}'`, { path: s.path, struct: 'bitmap directory', field: 'name', found: name, expected: (s.bitmaps?.list ?? []).map((x) => x.name) });
    return b;
  };
  const usable = (name: string) => {
    const b = find(name);
    if (b.inconsistent) {
      throw new DiskError('NEEDSREPAIR', `bitmap '${name}' is inconsistent (in_use was set: the image was not closed cleanly) and cannot be used; remove it`, { path: s.path, struct: 'bitmap directory', field: 'flags', found: 'in-use' });
    }
    const why = unkeepable(b);
    if (why) throw new DiskError('UNSUPPORTEDFEATURE', `bitmap '${name}' cannot be used: ${why}`, { path: s.path, struct: 'bitmap directory', field: 'flags', found: b.flags });
    return b;
  };
  const writable = async () => {
    s.checkWritable();
    if (s.h.version < 3) throw new DiskError('NOTSUPPORTED', 'persistent bitmaps need a version 3 (compat 1.1) image', { path: s.path, struct: 'header', field: 'version', expected: 3, found: s.h.version });
    await s.prepareWrite();
  };
  const commit = () => commitBitmaps.call(s, [...(s.bitmaps?.list ?? [])]);
  return {
    list: () => (s.bitmaps?.list ?? []).map(bitmapInfo),
    async add(name, opts = {}) {
      await writable();
      const bytes = Buffer.byteLength(name, 'utf8');
      if (bytes === 0 || bytes > MAX_BITMAP_NAME) throw new DiskError('INVAL', 'a bitmap name has 1 to 1023 bytes', { path: s.path, field: 'name', expected: `1..${MAX_BITMAP_NAME}`, found: bytes });
      if (s.bitmaps?.list.some((b) => b.name === name)) throw new DiskError('INVAL', `bitmap '${name}' already exists`, { path: s.path, struct: 'bitmap directory', field: 'name', found: name });
      if ((s.bitmaps?.list.length ?? 0) >= MAX_BITMAPS) throw new DiskError('NOSPACE', 'too many bitmaps', { path: s.path, field: 'nb_bitmaps', expected: `<= ${MAX_BITMAPS}` });
      // qemu's default (bdrv_get_default_bitmap_granularity): the cluster size, at least 4 KiB
      const granularity = opts.granularity ?? Math.max(4096, s.clusterSize);
      const gb = Math.log2(granularity);
      if (!Number.isInteger(gb) || gb < MIN_GRANULARITY_BITS || gb > MAX_GRANULARITY_BITS) {
        throw new DiskError('INVAL', 'bitmap granularity must be a power of two from 512 B to 2 GiB', { path: s.path, field: 'granularity', expected: `2^${MIN_GRANULARITY_BITS}..2^${MAX_GRANULARITY_BITS}`, found: granularity });
      }
      const b: Qcow2Bitmap = {
        name,
        granularityBits: gb,
        flags: opts.disabled ? 0 : BME.AUTO,
        type: BITMAP_TYPE_DIRTY,
        tableOffset: 0,
        tableSize: tableEntriesFor({ clusterSize: s.clusterSize, capacity: s.capacity }, gb),
        extra: Buffer.alloc(0),
        inconsistent: false,
        bits: Buffer.alloc(Math.ceil(granuleCount(s.capacity, gb) / 8)),
        changed: true,
      };
      // a bitmap added while writes are being recorded records them from now on
      if (s.bitmaps?.armed && !opts.disabled) {
        b.flags |= BME.IN_USE;
        b.tracking = true;
      }
      await commitBitmaps.call(s, [...(s.bitmaps?.list ?? []), b]);
    },
    async remove(name) {
      await writable();
      const b = find(name);
      await commitBitmaps.call(s, s.bitmaps!.list.filter((x) => x !== b));
    },
    async clear(name) {
      await writable();
      const b = usable(name);
      b.bits = Buffer.alloc(Math.ceil(granuleCount(s.capacity, b.granularityBits) / 8));
      b.changed = true;
      await commit();
    },
    async enable(name) {
      await writable();
      const b = usable(name);
      if (b.flags & BME.AUTO) return;
      b.flags |= BME.AUTO;
      if (s.bitmaps?.armed) {
        await bitsOf(s, b);
        b.flags |= BME.IN_USE;
        b.tracking = true;
      }
      await commit();
    },
    async disable(name) {
      await writable();
      const b = usable(name);
      if (!(b.flags & BME.AUTO)) return;
      b.flags &= ~BME.AUTO;
      if (b.tracking) {
        b.flags &= ~BME.IN_USE;
        b.tracking = false;
        b.changed = true;
      }
      await commit();
    },
    async merge(name, ranges) {
      await writable();
      const b = usable(name);
      const bits = await bitsOf(s, b);
      for (const r of ranges) markBytes(bits, b.granularityBits, r.offset, Math.min(r.length, s.capacity - r.offset));
      b.changed = true;
      await commit();
    },
    async dirty(name) {
      if (s.closed) throw new DiskError('CLOSED', undefined, { path: s.path });
      const b = usable(name);
      return setRanges(await bitsOf(s, b), b.granularityBits, s.capacity);
    },
  };
}

