/**
 * qcow2 persistent dirty bitmaps, read side (qcow2.md §3 extension 0x23852875, QEMU
 * docs/interop/qcow2.txt "Bitmaps extension"): the extension, the bitmap directory and the
 * bitmap tables, each bounded by QEMU's caps and the file before anything is allocated, and the
 * bits themselves (granule i = bit i % 8 of byte i / 8, as QEMU serializes them). The bitmaps
 * count only while autoclear bit 0 is set: a writer that did not keep them cleared it, and they
 * are ignored then (their clusters are leaks to check, as QEMU reports them). Writing lives in
 * bitmap-write.ts.
 */
import { DiskError, atMost } from '../../core/errors.js';
import { defineStruct, u8, u16, u32, u64 } from '../../binary/struct.js';
import type { ByteStore } from '../../storage/store.js';
import type { PersistentBitmapInfo } from '../types.js';
import { AUTOCLEAR, EXT, type ExtensionRecord } from './structs.js';

export const BitmapsExtension = defineStruct(
  'bitmaps extension',
  'be',
  [
    { name: 'nb_bitmaps', type: u32 },
    { name: 'reserved32', type: u32 },
    { name: 'bitmap_directory_size', type: u64 },
    { name: 'bitmap_directory_offset', type: u64 },
  ] as const,
  24,
);

export const BitmapDirEntry = defineStruct(
  'bitmap directory entry',
  'be',
  [
    { name: 'bitmap_table_offset', type: u64 },
    { name: 'bitmap_table_size', type: u32 },
    { name: 'flags', type: u32 },
    { name: 'type', type: u8 },
    { name: 'granularity_bits', type: u8 },
    { name: 'name_size', type: u16 },
    { name: 'extra_data_size', type: u32 },
  ] as const,
  24,
);

/** directory entry flags */
export const BME = Object.freeze({ IN_USE: 1, AUTO: 2, EXTRA_DATA_COMPATIBLE: 4 });
const KNOWN_FLAGS = 7;
/** the one bitmap type there is: dirty tracking */
export const BITMAP_TYPE_DIRTY = 1;
/** QEMU's caps (block/qcow2-bitmap.c, qcow2.h) */
export const MIN_GRANULARITY_BITS = 9;
export const MAX_GRANULARITY_BITS = 31;
export const MAX_BITMAP_NAME = 1023;
export const MAX_BITMAPS = 65535;
export const MAX_DIRECTORY_BYTES = 1024 * MAX_BITMAPS;
const MAX_TABLE_ENTRIES = 0x8000000;
/** bitmap bytes in memory (QEMU's BME_MAX_PHYS_SIZE) */
const MAX_PHYS_BYTES = 0x20000000;
export const TABLE_OFFSET_MASK = 0x00fffffffffffe00n;
const TABLE_ALL_ONES = 1n;
const TABLE_RESERVED_MASK = 0xff000000000001fen;

export interface Qcow2Bitmap {
  name: string;
  granularityBits: number;
  /** directory flags as stored (in_use, auto, extra_data_compatible, unknown ones kept) */
  flags: number;
  type: number;
  tableOffset: number;
  tableSize: number;
  /** extra data, kept as it is */
  extra: Buffer;
  /** in_use was set when the image was opened: not closed cleanly, the bits cannot be trusted */
  inconsistent: boolean;
  /** the bits, once loaded or made (granule i = bit i % 8 of byte i / 8) */
  bits?: Buffer;
  /** the bits differ from what the table stores: a new table at the next commit */
  changed?: boolean;
  /** this process set in_use to record writes; stored and cleared at close */
  tracking?: boolean;
}

export interface BitmapSet {
  list: Qcow2Bitmap[];
  dirOffset: number;
  dirSize: number;
  /** tracking armed (in_use written) for the enabled bitmaps */
  armed?: boolean;
}

export interface BitmapGeometry {
  clusterSize: number;
  capacity: number;
}

/** granules a bitmap of this granularity has over the disk */
export function granuleCount(capacity: number, granularityBits: number): number {
  return Math.ceil(capacity / 2 ** granularityBits);
}

/** bitmap table entries for this disk, cluster size and granularity */
export function tableEntriesFor(g: BitmapGeometry, granularityBits: number): number {
  return Math.ceil(Math.ceil(granuleCount(g.capacity, granularityBits) / 8) / g.clusterSize);
}

/** a bitmap's flags as qemu-img info names them */
export function flagNames(flags: number): string[] {
  const out: string[] = [];
  if (flags & BME.IN_USE) out.push('in-use');
  if (flags & BME.AUTO) out.push('auto');
  return out;
}

export function bitmapInfo(b: Qcow2Bitmap): PersistentBitmapInfo {
  return { name: b.name, granularity: 2 ** b.granularityBits, flags: flagNames(b.flags), enabled: (b.flags & BME.AUTO) !== 0 && !b.inconsistent, inconsistent: b.inconsistent };
}

/** What vdkit cannot keep in step when it writes: unknown flags, types, or extra data. */
export function unkeepable(b: Qcow2Bitmap): string | undefined {
  if (b.flags & ~KNOWN_FLAGS) return `unknown flags 0x${(b.flags & ~KNOWN_FLAGS).toString(16)}`;
  if (b.type !== BITMAP_TYPE_DIRTY) return `type ${b.type} (only 1, dirty tracking, is known)`;
  // the spec: extra data not marked compatible means the bitmap must not be used
  if (b.extra.length > 0 && !(b.flags & BME.EXTRA_DATA_COMPATIBLE)) return 'extra data not marked compatible';
  return undefined;
}

/** the live bitmaps extension's data, when the extension is there and autoclear bit 0 is set */
export function liveExtension(exts: readonly ExtensionRecord[], autoclear: bigint): Buffer | undefined {
  if ((autoclear & (1n << BigInt(AUTOCLEAR.BITMAPS))) === 0n) return undefined;
  return exts.find((e) => e.type === EXT.BITMAPS)?.data;
}

/**
 * The bitmap directory named by the extension, every entry checked as QEMU's check_dir_entry and
 * bitmap_list_load do (sizes, alignment, granularity, name, entries exactly filling the
 * directory, count, duplicate names); unknown flags and types are kept (the image then opens
 * read-only only).
 */
export async function readBitmapDirectory(path: string, store: ByteStore, ext: Buffer, fileSize: number, g: BitmapGeometry): Promise<BitmapSet> {
  const bad = (struct: string, field: string, message: string, expected?: unknown, found?: unknown) => new DiskError('CORRUPT', message, { path, struct, field, expected, found });
  if (ext.length !== BitmapsExtension.size) throw bad('bitmaps extension', 'length', 'bitmaps extension has the wrong length', BitmapsExtension.size, ext.length);
  const e = BitmapsExtension.decode(ext, 0, path);
  if (e.reserved32 !== 0) throw bad('bitmaps extension', 'reserved32', 'reserved field of the bitmaps extension is not zero', 0, e.reserved32);
  if (e.nb_bitmaps === 0 || e.nb_bitmaps > MAX_BITMAPS) throw bad('bitmaps extension', 'nb_bitmaps', 'bitmap count out of range', `1..${MAX_BITMAPS}`, e.nb_bitmaps);
  if (e.bitmap_directory_size > BigInt(MAX_DIRECTORY_BYTES) || e.bitmap_directory_size < 24n) {
    throw bad('bitmaps extension', 'bitmap_directory_size', 'bitmap directory size out of range', `24..${MAX_DIRECTORY_BYTES}`, e.bitmap_directory_size);
  }
  const dirSize = Number(e.bitmap_directory_size);
  if (e.bitmap_directory_offset % BigInt(g.clusterSize) !== 0n || e.bitmap_directory_offset === 0n) {
    throw bad('bitmaps extension', 'bitmap_directory_offset', 'bitmap directory offset is not a cluster boundary after the header', `a non-zero multiple of ${g.clusterSize}`, e.bitmap_directory_offset);
  }
  if (e.bitmap_directory_offset + e.bitmap_directory_size > BigInt(fileSize)) {
    throw bad('bitmaps extension', 'bitmap_directory_offset', 'bitmap directory lies past the end of the file', atMost(fileSize - dirSize), e.bitmap_directory_offset);
  }
  const dirOffset = Number(e.bitmap_directory_offset);
  const dir = await store.read(dirOffset, dirSize);
  const list: Qcow2Bitmap[] = [];
  let at = 0;
  for (let i = 0; at < dirSize; i++) {
    const field = `bitmap[${i}]`;
    if (i >= e.nb_bitmaps) throw bad('bitmap directory', 'nb_bitmaps', 'the directory holds more entries than the extension counts', e.nb_bitmaps, `more (entry ${i} at byte ${at})`);
    if (at + 24 > dirSize) throw bad('bitmap directory', field, 'truncated bitmap directory entry', `24 bytes before ${dirSize}`, dirSize - at);
    const d = BitmapDirEntry.decode(dir, at, path);
    const len = Math.ceil((24 + d.extra_data_size + d.name_size) / 8) * 8;
    if (d.extra_data_size > dirSize || at + len > dirSize) throw bad('bitmap directory', `${field}.extra_data_size`, 'bitmap directory entry runs past the directory', atMost(dirSize - at), len);
    if (d.name_size === 0 || d.name_size > MAX_BITMAP_NAME) throw bad('bitmap directory', `${field}.name_size`, 'bitmap name length out of range', `1..${MAX_BITMAP_NAME}`, d.name_size);
    if (d.granularity_bits < MIN_GRANULARITY_BITS || d.granularity_bits > MAX_GRANULARITY_BITS) {
      throw bad('bitmap directory', `${field}.granularity_bits`, 'bitmap granularity out of range', `${MIN_GRANULARITY_BITS}..${MAX_GRANULARITY_BITS}`, d.granularity_bits);
    }
    const tableOffset = Number(d.bitmap_table_offset & TABLE_OFFSET_MASK);
    if ((d.bitmap_table_offset & ~TABLE_OFFSET_MASK) !== 0n || tableOffset % g.clusterSize !== 0) {
      throw bad('bitmap directory', `${field}.bitmap_table_offset`, 'bitmap table offset is not a cluster boundary', `a multiple of ${g.clusterSize}`, d.bitmap_table_offset);
    }
    const want = tableEntriesFor(g, d.granularity_bits);
    if (d.bitmap_table_size > MAX_TABLE_ENTRIES || d.bitmap_table_size * g.clusterSize > MAX_PHYS_BYTES) {
      throw bad('bitmap directory', `${field}.bitmap_table_size`, "bitmap larger than QEMU's 512 MiB cap", atMost(MAX_PHYS_BYTES / g.clusterSize), d.bitmap_table_size);
    }
    if (d.bitmap_table_size !== want) throw bad('bitmap directory', `${field}.bitmap_table_size`, 'bitmap table size does not match the disk size and granularity', want, d.bitmap_table_size);
    if (tableOffset === 0 || tableOffset + d.bitmap_table_size * 8 > fileSize) {
      throw bad('bitmap directory', `${field}.bitmap_table_offset`, 'bitmap table lies outside the file', `1..${fileSize - d.bitmap_table_size * 8}`, tableOffset);
    }
    const name = dir.toString('utf8', at + 24 + d.extra_data_size, at + 24 + d.extra_data_size + d.name_size);
    if (list.some((b) => b.name === name)) throw bad('bitmap directory', `${field}.name`, 'two bitmaps have the same name', 'unique names', name);
    list.push({
      name,
      granularityBits: d.granularity_bits,
      flags: d.flags,
      type: d.type,
      tableOffset,
      tableSize: d.bitmap_table_size,
      extra: Buffer.from(dir.subarray(at + 24, at + 24 + d.extra_data_size)),
      inconsistent: (d.flags & BME.IN_USE) !== 0,
    });
    at += len;
  }
  if (list.length !== e.nb_bitmaps) throw bad('bitmaps extension', 'nb_bitmaps', 'bitmap count does not match the directory', list.length, e.nb_bitmaps);
  return { list, dirOffset, dirSize };
}

/** The directory's bytes for these bitmaps (entries padded to 8, as QEMU lays them out). */
export function encodeBitmapDirectory(list: readonly Qcow2Bitmap[]): Buffer {
  const parts: Buffer[] = [];
  for (const b of list) {
    const name = Buffer.from(b.name, 'utf8');
    const len = Math.ceil((24 + b.extra.length + name.length) / 8) * 8;
    const out = Buffer.alloc(len);
    BitmapDirEntry.encode(
      { bitmap_table_offset: BigInt(b.tableOffset), bitmap_table_size: b.tableSize, flags: b.flags, type: b.type, granularity_bits: b.granularityBits, name_size: name.length, extra_data_size: b.extra.length },
      out,
      0,
    );
    b.extra.copy(out, 24);
    name.copy(out, 24 + b.extra.length);
    parts.push(out);
  }
  return Buffer.concat(parts);
}

/** A bitmap table's entries, each checked (reserved bits, alignment, inside the file). */
export async function readBitmapTable(path: string, store: ByteStore, b: Qcow2Bitmap, fileSize: number, cs: number): Promise<bigint[]> {
  const raw = await store.read(b.tableOffset, b.tableSize * 8);
  const out: bigint[] = [];
  for (let k = 0; k < b.tableSize; k++) {
    const v = raw.readBigUInt64BE(k * 8);
    const off = v & TABLE_OFFSET_MASK;
    const where = { path, struct: 'bitmap table', field: `${b.name}[${k}]`, found: `0x${v.toString(16)}` };
    if ((v & TABLE_RESERVED_MASK) !== 0n) throw new DiskError('CORRUPT', 'bitmap table entry has reserved bits set', where);
    if (off !== 0n && (v & TABLE_ALL_ONES) !== 0n) throw new DiskError('CORRUPT', 'bitmap table entry names a cluster and "all ones" at once', where);
    if (off % BigInt(cs) !== 0n) throw new DiskError('CORRUPT', 'bitmap data cluster is not cluster aligned', where);
    if (off !== 0n && off + BigInt(cs) > BigInt(fileSize)) throw new DiskError('CORRUPT', 'bitmap data cluster lies past the end of the file', { ...where, expected: atMost(fileSize - cs) });
    out.push(v);
  }
  return out;
}

/** The bitmap's bits from its table and data clusters (zeros for entry 0, ones for entry 1). */
export async function loadBits(path: string, store: ByteStore, b: Qcow2Bitmap, fileSize: number, g: BitmapGeometry): Promise<Buffer> {
  if (b.bits) return b.bits;
  const cs = g.clusterSize;
  const bytes = Math.ceil(granuleCount(g.capacity, b.granularityBits) / 8);
  const bits = Buffer.alloc(bytes);
  const table = await readBitmapTable(path, store, b, fileSize, cs);
  for (let k = 0; k < table.length; k++) {
    const v = table[k]!;
    const at = k * cs;
    const n = Math.min(cs, bytes - at);
    if (n <= 0) break;
    if (v === TABLE_ALL_ONES) bits.fill(0xff, at, at + n);
    else if (v !== 0n) await store.readInto(bits.subarray(at, at + n), Number(v & TABLE_OFFSET_MASK));
  }
  b.bits = bits;
  return bits;
}

/** Set granules [first, last] (inclusive). */
export function setGranules(bits: Buffer, first: number, last: number): void {
  if (last < first) return;
  const fb = first >>> 3;
  const lb = last >>> 3;
  if (fb === lb) {
    for (let i = first; i <= last; i++) bits[fb]! |= 1 << (i & 7);
    return;
  }
  for (let i = first; i < (fb + 1) * 8; i++) bits[fb]! |= 1 << (i & 7);
  if (lb > fb + 1) bits.fill(0xff, fb + 1, lb);
  for (let i = lb * 8; i <= last; i++) bits[lb]! |= 1 << (i & 7);
}

/** Mark the granules [offset, offset+length) touches. */
export function markBytes(bits: Buffer, granularityBits: number, offset: number, length: number): void {
  if (length <= 0) return;
  const g = 2 ** granularityBits;
  setGranules(bits, Math.floor(offset / g), Math.floor((offset + length - 1) / g));
}

/** Byte ranges whose granules are set, clipped to [0, capacity), maximal runs in order. */
export function setRanges(bits: Buffer, granularityBits: number, capacity: number): { offset: number; length: number }[] {
  const g = 2 ** granularityBits;
  const out: { offset: number; length: number }[] = [];
  let start = -1;
  const close = (end: number) => {
    const from = start * g;
    const to = Math.min(capacity, end * g);
    if (to > from) out.push({ offset: from, length: to - from });
    start = -1;
  };
  for (let byte = 0; byte < bits.length; byte++) {
    const v = bits[byte]!;
    if (v === 0 && start < 0) continue;
    if (v === 0xff && start >= 0) continue;
    for (let k = 0; k < 8; k++) {
      const set = (v >> k) & 1;
      if (set && start < 0) start = byte * 8 + k;
      else if (!set && start >= 0) close(byte * 8 + k);
    }
  }
  if (start >= 0) close(bits.length * 8);
  return out;
}
