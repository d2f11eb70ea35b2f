/**
 * On-disk structures of qcow2 (qcow2.md, QEMU docs/interop/qcow2.txt), all big-endian: the
 * header (v2: 72 bytes, v3: header_length >= 104, QEMU >= 5.1 writes 112), header extension
 * records, snapshot table entries, and the pure arithmetic around L1/L2 entries, compressed
 * cluster descriptors and packed refcounts. Nothing here does I/O.
 */
import { defineStruct, reserved, u8, u16, u32, u64 } from '../../binary/struct.js';
import type { CreateOptionInfo } from '../types.js';

export const QCOW2_MAGIC = 0x514649fb;
export const V2_HEADER_LENGTH = 72;
export const V3_MIN_HEADER_LENGTH = 104;
/** what QEMU >= 5.1 writes: the 104 bytes, compression_type and 7 bytes of padding */
export const V3_HEADER_LENGTH = 112;

/** QEMU accepts cluster_bits 9..21 (512 B .. 2 MiB) */
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
export const DEFAULT_CLUSTER_BITS = 16;
/** QEMU's caps (qcow2.h): L1 table <= 32 MiB, refcount table <= 8 MiB, 65536 snapshots, name <= 1023 bytes */
export const MAX_L1_BYTES = 32 * 1024 * 1024;
export const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
export const MAX_SNAPSHOTS = 65536;
export const MAX_SNAPSHOT_EXTRA = 1024;
export const MAX_BACKING_NAME = 1023;
/** the whole snapshot table (QEMU's QCOW_MAX_SNAPSHOTS_SIZE: 64 MiB) */
export const MAX_SNAPSHOT_TABLE_BYTES = 64 * 1024 * 1024;
/** host offsets are 56-bit in L1/L2/refcount entries */
export const MAX_HOST_OFFSET = 2 ** 56;

export const Header = defineStruct(
  'header',
  'be',
  [
    { name: 'magic', type: u32, expect: QCOW2_MAGIC },
    { name: 'version', type: u32 },
    { name: 'backing_file_offset', type: u64 },
    { name: 'backing_file_size', type: u32 },
    { name: 'cluster_bits', type: u32 },
    { name: 'size', type: u64 },
    { name: 'crypt_method', type: u32 },
    { name: 'l1_size', type: u32 },
    { name: 'l1_table_offset', type: u64 },
    { name: 'refcount_table_offset', type: u64 },
    { name: 'refcount_table_clusters', type: u32 },
    { name: 'nb_snapshots', type: u32 },
    { name: 'snapshots_offset', type: u64 },
    // ---- version 3 (absent, i.e. 0 / refcount_order 4 / header_length 72, in version 2)
    { name: 'incompatible_features', type: u64 },
    { name: 'compatible_features', type: u64 },
    { name: 'autoclear_features', type: u64 },
    { name: 'refcount_order', type: u32 },
    { name: 'header_length', type: u32 },
    // ---- optional: present iff header_length > 104
    { name: 'compression_type', type: u8 },
    { name: 'padding', type: reserved(7) },
  ] as const,
  V3_HEADER_LENGTH,
);
export type HeaderValue = ReturnType<typeof Header.decode>;
export type HeaderField = Parameters<typeof Header.offsetOf>[0];

export const ExtensionHeader = defineStruct(
  'headerExtension',
  'be',
  [
    { name: 'type', type: u32 },
    { name: 'length', type: u32 },
  ] as const,
  8,
);

export const SnapshotHeader = defineStruct(
  'snapshot',
  'be',
  [
    { name: 'l1_table_offset', type: u64 },
    { name: 'l1_size', type: u32 },
    { name: 'id_str_size', type: u16 },
    { name: 'name_size', type: u16 },
    { name: 'date_sec', type: u32 },
    { name: 'date_nsec', type: u32 },
    { name: 'vm_clock_nsec', type: u64 },
    { name: 'vm_state_size', type: u32 },
    { name: 'extra_data_size', type: u32 },
  ] as const,
  40,
);

/** Header extension types (qcow2.md §3). */
export const EXT = Object.freeze({
  END: 0x00000000,
  BACKING_FORMAT: 0xe2792aca,
  FEATURE_TABLE: 0x6803f857,
  BITMAPS: 0x23852875,
  CRYPTO: 0x0537be77,
  DATA_FILE: 0x44415441,
});

/** Feature bits (qcow2.md §2.1). */
export const INCOMPAT = Object.freeze({ DIRTY: 0, CORRUPT: 1, DATA_FILE: 2, COMPRESSION: 3, EXTL2: 4 });
export const COMPAT_LAZY_REFCOUNTS = 0;
/** header byte 104 (compression_type): 0 deflate, 1 zstd (then incompatible bit 3 is set) */
export const COMPRESSION_DEFLATE = 0;
export const COMPRESSION_ZSTD = 1;
export const COMPRESSION_NAMES: readonly string[] = ['zlib', 'zstd'];
export const AUTOCLEAR = Object.freeze({ BITMAPS: 0, DATA_FILE_RAW: 1 });
/** incompatible bits this driver knows (it may still refuse some of them) */
export const KNOWN_INCOMPAT_MASK = 0x1fn;

/** The feature name table QEMU 7.2 writes for cluster sizes above 4 KiB (8 entries, 384 bytes). */
export const QEMU_FEATURE_NAMES: readonly [number, number, string][] = [
  [0, 0, 'dirty bit'],
  [0, 1, 'corrupt bit'],
  [0, 2, 'external data file'],
  [0, 3, 'compression type'],
  [0, 4, 'extended L2 entries'],
  [1, 0, 'lazy refcounts'],
  [2, 0, 'bitmaps'],
  [2, 1, 'raw external data'],
];
export const FEATURE_ENTRY_SIZE = 48;

export function encodeFeatureTable(entries: readonly [number, number, string][] = QEMU_FEATURE_NAMES): Buffer {
  const b = Buffer.alloc(entries.length * FEATURE_ENTRY_SIZE);
  entries.forEach(([type, bit, name], i) => {
    b[i * FEATURE_ENTRY_SIZE] = type;
    b[i * FEATURE_ENTRY_SIZE + 1] = bit;
    b.write(name.slice(0, 46), i * FEATURE_ENTRY_SIZE + 2, 'latin1');
  });
  return b;
}

/** Feature name table data as `${type}:${bit}` -> name. */
export function decodeFeatureTable(data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  for (let at = 0; at + FEATURE_ENTRY_SIZE <= data.length; at += FEATURE_ENTRY_SIZE) {
    const raw = data.subarray(at + 2, at + FEATURE_ENTRY_SIZE);
    const nul = raw.indexOf(0);
    out.set(`${data[at]}:${data[at + 1]}`, raw.subarray(0, nul < 0 ? raw.length : nul).toString('latin1'));
  }
  return out;
}

/** Set bit numbers of a 64-bit mask, lowest first. */
export function bitsOf(mask: bigint): number[] {
  const out: number[] = [];
  for (let i = 0; i < 64; i++) if ((mask >> BigInt(i)) & 1n) out.push(i);
  return out;
}

// ------------------------------------------------------------------ sizes

export interface Geometry {
  clusterBits: number;
  clusterSize: number;
  /** bytes per L2 entry: 8, or 16 with extended L2 */
  l2EntrySize: number;
  /** L2 entries per L2 table */
  l2Entries: number;
  /** log2 of the guest bytes one L2 table maps */
  l2Bits: number;
  /**
   * an external data file (incompatible bit 2): host offset 0 is a real cluster there, so an
   * entry of offset 0 with COPIED set is allocated (qcow2.md §4: only then may it be 0)
   */
  externalData: boolean;
}

export function geometry(clusterBits: number, extendedL2: boolean, externalData = false): Geometry {
  const clusterSize = 2 ** clusterBits;
  const l2EntrySize = extendedL2 ? 16 : 8;
  const l2Entries = clusterSize / l2EntrySize;
  return { clusterBits, clusterSize, l2EntrySize, l2Entries, l2Bits: clusterBits + Math.log2(l2Entries), externalData };
}

/** L1 entries needed to map `size` guest bytes (QEMU size_to_l1). */
export function l1EntriesFor(size: number, g: Geometry): number {
  return Math.ceil(size / 2 ** g.l2Bits);
}

// ------------------------------------------------------------------ L1 / L2 entries (qcow2.md §4)

/** bit 63 of L1 and L2 entries: refcount is exactly 1 */
export const COPIED_HI = 0x80000000;
/** bit 62 of L2 entries */
export const COMPRESSED_HI = 0x40000000;
/** offset bits 9..55, split in two 32-bit halves */
const OFFSET_HI = 0x00ffffff;
/** L1 reserved bits 0..8 and 56..62 */
const L1_RESERVED_HI = 0x7f000000;
const L1_RESERVED_LO = 0x1ff;
/** standard L2 descriptor reserved bits 1..8 and 56..61 (bit 0 is the zero flag) */
const L2_RESERVED_HI = 0x3f000000;
const L2_RESERVED_LO = 0x1fe;

export type ClusterKind = 'unallocated' | 'zero' | 'normal' | 'compressed';

export interface L1Entry {
  /** L2 table offset, 0 = none */
  offset: number;
  copied: boolean;
  reservedBits: boolean;
}

export function decodeL1(buf: Buffer, index: number): L1Entry {
  const hi = buf.readUInt32BE(index * 8);
  const lo = buf.readUInt32BE(index * 8 + 4);
  return {
    offset: (hi & OFFSET_HI) * 2 ** 32 + (lo >>> 0) - (lo & 0x1ff),
    copied: (hi & COPIED_HI) !== 0,
    reservedBits: (hi & L1_RESERVED_HI) !== 0 || (lo & L1_RESERVED_LO) !== 0,
  };
}

export function encodeEntry(buf: Buffer, at: number, offset: number, flagsHi: number, flagsLo = 0): void {
  buf.writeUInt32BE(((Math.floor(offset / 2 ** 32) & OFFSET_HI) | flagsHi) >>> 0, at);
  buf.writeUInt32BE(((offset % 2 ** 32) | flagsLo) >>> 0, at + 4);
}

export function encodeL1(buf: Buffer, index: number, l2Offset: number, copied: boolean): void {
  encodeEntry(buf, index * 8, l2Offset, copied && l2Offset !== 0 ? COPIED_HI : 0);
}

export interface L2Entry {
  kind: ClusterKind;
  /** normal / preallocated zero: the host cluster; compressed: the byte offset of the data; else 0 */
  offset: number;
  copied: boolean;
  /** compressed: most bytes the compressed data can span (QEMU's csize) */
  csize: number;
  reservedBits: boolean;
  /** extended L2 only: "allocated" bits (0..31) and "reads as zero" bits (32..63 -> 0..31) */
  allocMask: number;
  zeroMask: number;
}

/**
 * Decode the L2 entry at `index` (8 bytes, or 16 with extended L2). Offsets above 2^53 are left
 * to the caller's bounds checks (they are always past the end of any file).
 */
export function decodeL2(buf: Buffer, index: number, g: Geometry): L2Entry {
  const at = index * g.l2EntrySize;
  const hi = buf.readUInt32BE(at);
  const lo = buf.readUInt32BE(at + 4);
  const extended = g.l2EntrySize === 16;
  const allocMask = extended ? buf.readUInt32BE(at + 12) : 0;
  const zeroMask = extended ? buf.readUInt32BE(at + 8) : 0;
  const copied = (hi & COPIED_HI) !== 0;
  if (hi & COMPRESSED_HI) {
    const d = decodeCompressed(hi, lo, g.clusterBits);
    return { kind: 'compressed', offset: d.offset, copied, csize: d.csize, reservedBits: false, allocMask, zeroMask };
  }
  const offset = (hi & OFFSET_HI) * 2 ** 32 + (lo >>> 0) - (lo & 0x1ff);
  const reservedBits = (hi & L2_RESERVED_HI) !== 0 || (lo & L2_RESERVED_LO) !== 0;
  let kind: ClusterKind;
  if (!extended && lo & 1) kind = 'zero';
  else if (offset === 0 && !(copied && g.externalData)) kind = extended && zeroMask !== 0 ? 'zero' : 'unallocated';
  else kind = 'normal';
  return { kind, offset, copied, csize: 0, reservedBits, allocMask, zeroMask };
}

/** Write a standard L2 entry: `offset` (0 for none), COPIED, zero flag. */
export function encodeL2(buf: Buffer, index: number, g: Geometry, offset: number, opts: { copied?: boolean; zero?: boolean } = {}): void {
  const at = index * g.l2EntrySize;
  encodeEntry(buf, at, offset, opts.copied ? COPIED_HI : 0, opts.zero ? 1 : 0);
  if (g.l2EntrySize === 16) buf.fill(0, at + 8, at + 16);
}

// ------------------------------------------------------------------ compressed descriptors (qcow2.md §6)

/** x = 62 - (cluster_bits - 8): bits 0..x-1 byte offset, bits x..61 additional 512-byte sectors */
export function compressedShift(clusterBits: number): number {
  return 62 - (clusterBits - 8);
}

export function decodeCompressed(hi: number, lo: number, clusterBits: number): { offset: number; sectors: number; csize: number } {
  // in 32-bit halves, not BigInt (a checker walks every entry of every table: BigInt made a
  // table of garbage cost a second, found by the fuzzer): the field split lies in the high word,
  // 17 to 29 bits up (cluster bits 21 down to 9)
  const split = compressedShift(clusterBits) - 32;
  const h = (hi & 0x3fffffff) >>> 0;
  const sectors = ((h >>> split) & ((1 << (clusterBits - 8)) - 1)) + 1;
  const offHi = h & ((1 << split) - 1);
  // offsets up to 2^61: anything above 2^53 is past every file and is refused by bounds checks
  const offset = offHi >= 2 ** 21 ? Number.MAX_SAFE_INTEGER : offHi * 2 ** 32 + (lo >>> 0);
  return { offset, sectors, csize: sectors * 512 - (offset % 512) };
}

/** The L2 entry (bit 62 set, COPIED never) of `length` compressed bytes at byte `offset`. */
export function encodeCompressed(offset: number, length: number, clusterBits: number): bigint {
  const extra = BigInt(Math.floor((offset + length - 1) / 512) - Math.floor(offset / 512));
  return (1n << 62n) | (extra << BigInt(compressedShift(clusterBits))) | BigInt(offset);
}

// ------------------------------------------------------------------ refcounts (qcow2.md §5)

/** Refcount `i` of a refcount block with entries of 2^order bits (bit 0 = LSB for sub-byte widths). */
export function getRefcount(block: Buffer, i: number, order: number): number {
  switch (order) {
    case 4:
      return block.readUInt16BE(i * 2);
    case 3:
      return block[i]!;
    case 5:
      return block.readUInt32BE(i * 4);
    case 6: {
      const v = block.readBigUInt64BE(i * 8);
      return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
    }
    default: {
      const bits = 1 << order;
      const bit = i * bits;
      return (block[bit >> 3]! >> (bit & 7)) & ((1 << bits) - 1);
    }
  }
}

export function setRefcount(block: Buffer, i: number, order: number, value: number): void {
  switch (order) {
    case 4:
      block.writeUInt16BE(value, i * 2);
      return;
    case 3:
      block[i] = value;
      return;
    case 5:
      block.writeUInt32BE(value, i * 4);
      return;
    case 6:
      block.writeBigUInt64BE(BigInt(value), i * 8);
      return;
    default: {
      const bits = 1 << order;
      const bit = i * bits;
      const mask = ((1 << bits) - 1) << (bit & 7);
      block[bit >> 3] = (block[bit >> 3]! & ~mask) | ((value << (bit & 7)) & mask);
    }
  }
}

/** Largest refcount an entry of 2^order bits holds (capped to a safe integer for 64 bits). */
export function maxRefcount(order: number): number {
  return order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** (1 << order) - 1;
}

/** Byte range [from, to) of a refcount block that holds entries first..last. */
export function refcountBytes(first: number, last: number, order: number): [number, number] {
  const bits = 1 << order;
  return [Math.floor((first * bits) / 8), Math.ceil(((last + 1) * bits) / 8)];
}

// ------------------------------------------------------------------ format names

/** QEMU's format names for the backing format extension <-> vdkit driver names. */
const QEMU_TO_VDKIT: Record<string, string> = { vpc: 'vhd' };
const VDKIT_TO_QEMU: Record<string, string> = { vhd: 'vpc' };

export function formatFromQemu(name: string): string {
  return QEMU_TO_VDKIT[name] ?? name;
}

export function formatToQemu(name: string): string {
  return VDKIT_TO_QEMU[name] ?? name;
}

// ------------------------------------------------------------------ cluster 0 (qcow2.md §2, §3)

export interface ExtensionRecord {
  type: number;
  data: Buffer;
}

const pad8 = (n: number) => Math.ceil(n / 8) * 8;

/** Bytes cluster 0 needs for this header, these extensions and this backing name. */
export function headerAreaSize(headerLength: number, exts: readonly ExtensionRecord[], backingName?: Buffer): number {
  let n = headerLength;
  for (const e of exts) n += 8 + pad8(e.data.length);
  return n + 8 + (backingName?.length ?? 0);
}

/**
 * Cluster 0's content as QEMU's qcow2_update_header lays it out: the header (72 bytes for
 * version 2, `header_length` for version 3, bytes past 112 taken from `tail`), the extensions
 * (each padded to 8 bytes), the end marker, then the backing file name, whose offset and length
 * are written into the header here.
 */
export function encodeHeaderArea(h: HeaderValue, tail: Buffer, exts: readonly ExtensionRecord[], backingName?: Buffer): Buffer {
  const headerLength = h.version === 2 ? V2_HEADER_LENGTH : h.header_length;
  const size = headerAreaSize(headerLength, exts, backingName);
  const out = Buffer.alloc(size);
  const nameAt = size - (backingName?.length ?? 0);
  const full = Header.encode({ ...h, backing_file_offset: backingName ? BigInt(nameAt) : 0n, backing_file_size: backingName?.length ?? 0 });
  full.copy(out, 0, 0, Math.min(headerLength, V3_HEADER_LENGTH));
  if (headerLength > V3_HEADER_LENGTH) tail.copy(out, V3_HEADER_LENGTH, 0, headerLength - V3_HEADER_LENGTH);
  let at = headerLength;
  for (const e of exts) {
    ExtensionHeader.encode({ type: e.type, length: e.data.length }, out, at);
    e.data.copy(out, at + 8);
    at += 8 + pad8(e.data.length);
  }
  at += 8; // end marker: type 0, length 0
  backingName?.copy(out, at);
  return out;
}

/** the create types (the version) by every name qemu-img and vdkit accept */
export const TYPES: Record<string, 2 | 3> = { v3: 3, '1.1': 3, 'compat=1.1': 3, qcow2: 3, v2: 2, '0.10': 2, 'compat=0.10': 2 };

/** `amend -o` keys (the driver lists them without loading amend.ts) */
export const QCOW2_AMEND_OPTIONS: readonly CreateOptionInfo[] = Object.freeze([
  { name: 'compat', description: '0.10 (version 2) or 1.1 (version 3); down to 0.10 only when no version 3 feature is in use' },
  { name: 'refcount_bits', description: 'refcount width: 1, 2, 4, 8, 16, 32 or 64 (version 2: 16 only); the refcount structure is rewritten' },
  { name: 'lazy_refcounts', description: 'on or off (compat 1.1 only); vdkit itself always writes refcounts at once' },
]);
