/**
 * On-disk structures of Microsoft VHD (vhd.md part 1): the 512-byte footer, the 1024-byte
 * dynamic disk header and its 24-byte parent locator entries, all big-endian; plus the pure
 * arithmetic around them (checksum, CHS geometry, the 2000-01-01 epoch, unique id text, the
 * size rule per creator). Nothing here does I/O.
 */
import { bytes, defineStruct, reserved, u8, u16, u32, u64, ascii } from '../../binary/struct.js';
import { guidFromIdentity, guidFromText, guidText, newGuid } from '../../binary/guid.js';
import type { Geometry } from '../types.js';

export const SECTOR = 512;
export const FOOTER_SIZE = 512;
export const HEADER_SIZE = 1024;
export const FOOTER_COOKIE = 'conectix';
export const HEADER_COOKIE = 'cxsparse';
/** bit 1 of Features is reserved and must be set */
export const FEATURES_RESERVED = 0x2;
export const FILE_FORMAT_VERSION = 0x00010000;
export const HEADER_VERSION = 0x00010000;
/** Data offset of a fixed disk, and the unused "next structure" offset of the dynamic header */
export const NO_OFFSET = 0xffffffffffffffffn;

export const DISK_FIXED = 2;
export const DISK_DYNAMIC = 3;
export const DISK_DIFFERENCING = 4;
export const DISK_TYPE_NAMES: Record<number, 'fixed' | 'dynamic' | 'differencing'> = { 2: 'fixed', 3: 'dynamic', 4: 'differencing' };

/** BAT entry of a block that is not allocated */
export const BAT_UNUSED = 0xffffffff;
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;
/** largest block size we accept: bigger ones mean per-block buffers sized by an untrusted field */
export const MAX_BLOCK_SIZE = 256 * 1024 * 1024;
/** QEMU's limit (VHD_MAX_SECTORS = 0xff000000): 2040 GiB */
export const MAX_VHD_BYTES = 0xff000000 * SECTOR;
/** BAT entries we hold in memory (64 MiB); a 2040 GiB disk with 2 MiB blocks needs 1044480 */
export const MAX_BAT_ENTRIES = 16 * 1024 * 1024;
/** bytes of one parent locator's data we read (a 32767-character Windows path is 65534 bytes) */
export const MAX_LOCATOR_BYTES = 65536;
/** smallest data space we reserve for a locator we write, so a later rebase usually fits in place */
export const LOCATOR_RESERVE = 4096;

/** 65535 x 16 x 255 sectors: the largest CHS geometry (about 127.5 GiB) */
export const MAX_GEOMETRY: Geometry = Object.freeze({ cylinders: 65535, heads: 16, sectors: 255 });
export const MAX_GEOMETRY_SECTORS = 65535 * 16 * 255;

/** Parent locator platform codes (vhd.md §4.1) */
export const PLATFORM = Object.freeze({
  NONE: 0,
  Wi2r: 0x57693272,
  Wi2k: 0x5769326b,
  W2ru: 0x57327275,
  W2ku: 0x57326b75,
  Mac: 0x4d616320,
  MacX: 0x4d616358,
});

/** The creator application vdkit writes ("vdkt"), its version (vdkit 0.1 = 0x00000001) and host OS. */
export const VDKIT_CREATOR_APP = 'vdkt';
export const VDKIT_CREATOR_VERSION = 0x00000001;
export const CREATOR_HOST_WINDOWS = 'Wi2k';

export const Footer = defineStruct(
  'footer',
  'be',
  [
    { name: 'cookie', type: ascii(8), expect: FOOTER_COOKIE },
    { name: 'features', type: u32 },
    { name: 'fileFormatVersion', type: u32 },
    { name: 'dataOffset', type: u64 },
    { name: 'timestamp', type: u32 },
    { name: 'creatorApplication', type: bytes(4) },
    { name: 'creatorVersion', type: u32 },
    { name: 'creatorHostOS', type: bytes(4) },
    { name: 'originalSize', type: u64 },
    { name: 'currentSize', type: u64 },
    { name: 'cylinders', type: u16 },
    { name: 'heads', type: u8 },
    { name: 'sectorsPerTrack', type: u8 },
    { name: 'diskType', type: u32 },
    { name: 'checksum', type: u32 },
    { name: 'uniqueId', type: bytes(16) },
    { name: 'savedState', type: u8 },
    { name: 'reserved', type: reserved(427) },
  ] as const,
  FOOTER_SIZE,
);
export type FooterValue = ReturnType<typeof Footer.decode>;

export const DynamicHeader = defineStruct(
  'dynamicHeader',
  'be',
  [
    { name: 'cookie', type: ascii(8), expect: HEADER_COOKIE },
    { name: 'dataOffset', type: u64 },
    { name: 'tableOffset', type: u64 },
    { name: 'headerVersion', type: u32 },
    { name: 'maxTableEntries', type: u32 },
    { name: 'blockSize', type: u32 },
    { name: 'checksum', type: u32 },
    { name: 'parentUniqueId', type: bytes(16) },
    { name: 'parentTimestamp', type: u32 },
    { name: 'reserved1', type: reserved(4) },
    { name: 'parentUnicodeName', type: bytes(512) },
    { name: 'parentLocators', type: bytes(8 * 24) },
    { name: 'reserved2', type: reserved(256) },
  ] as const,
  HEADER_SIZE,
);
export type DynamicHeaderValue = ReturnType<typeof DynamicHeader.decode>;

export const ParentLocatorEntry = defineStruct(
  'parentLocator',
  'be',
  [
    { name: 'platformCode', type: u32 },
    { name: 'platformDataSpace', type: u32 },
    { name: 'platformDataLength', type: u32 },
    { name: 'reserved', type: reserved(4) },
    { name: 'platformDataOffset', type: u64 },
  ] as const,
  24,
);
export type ParentLocatorValue = ReturnType<typeof ParentLocatorEntry.decode>;

// ------------------------------------------------------------------ checksum (§2.1)

/** One's complement of the byte sum of `buf`, the 4 bytes at `checksumAt` counted as zero. */
export function vhdChecksum(buf: Buffer, checksumAt: number): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) if (i < checksumAt || i >= checksumAt + 4) sum += buf[i]!;
  return ~sum >>> 0;
}

export const FOOTER_CHECKSUM_AT = Footer.offsetOf('checksum');
export const HEADER_CHECKSUM_AT = DynamicHeader.offsetOf('checksum');

/** Encode a footer with its checksum computed (the value's own checksum field is ignored). */
export function encodeFooter(v: FooterValue): Buffer {
  const buf = Footer.encode(v);
  buf.writeUInt32BE(vhdChecksum(buf, FOOTER_CHECKSUM_AT), FOOTER_CHECKSUM_AT);
  return buf;
}

export function encodeHeader(v: DynamicHeaderValue): Buffer {
  const buf = DynamicHeader.encode(v);
  buf.writeUInt32BE(vhdChecksum(buf, HEADER_CHECKSUM_AT), HEADER_CHECKSUM_AT);
  return buf;
}

// ------------------------------------------------------------------ CHS geometry (§3)

/** The VHD spec's geometry for a sector count (rounds down; identical in QEMU and VirtualBox). */
export function chsGeometry(totalSectors: number): Geometry {
  const total = Math.min(totalSectors, MAX_GEOMETRY_SECTORS);
  let spt: number;
  let heads: number;
  let cth: number;
  if (total >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(total / spt);
  } else {
    spt = 17;
    cth = Math.floor(total / spt);
    heads = Math.max(4, Math.ceil(cth / 1024));
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(total / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(total / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectors: spt };
}

export function geometrySectors(g: Geometry): number {
  return g.cylinders * g.heads * g.sectors;
}

export function isMaxGeometry(g: Geometry): boolean {
  return g.cylinders === 65535 && g.heads === 16 && g.sectors === 255;
}

/**
 * What `qemu-img create -f vpc` does without force_size (§3.1): grow the sector count until a
 * geometry covers it and use that geometry's size; at the maximum geometry keep the exact size.
 */
export function chsRoundedSize(bytes: number): { size: number; geometry: Geometry } {
  const sectors = Math.ceil(bytes / SECTOR);
  if (sectors >= MAX_GEOMETRY_SECTORS) return { size: sectors * SECTOR, geometry: { ...MAX_GEOMETRY } };
  let g: Geometry = { cylinders: 0, heads: 0, sectors: 0 };
  for (let i = 0; geometrySectors(g) < sectors; i++) g = chsGeometry(sectors + i);
  if (isMaxGeometry(g)) return { size: sectors * SECTOR, geometry: g };
  return { size: geometrySectors(g) * SECTOR, geometry: g };
}

/**
 * The geometry vdkit writes for an exact size: the spec's geometry when it describes the size
 * exactly, else 65535/16/255, the marker QEMU's force_size writes, which every QEMU reads as
 * "use current size" (vhd.md §2.2); Hyper-V, VirtualBox and libvhdi use current size anyway.
 */
export function exactSizeGeometry(bytes: number): Geometry {
  const g = chsGeometry(bytes / SECTOR);
  return geometrySectors(g) * SECTOR === bytes ? g : { ...MAX_GEOMETRY };
}

// ------------------------------------------------------------------ size rule (§2.2)

/** Creators whose own tools size the disk by its CHS geometry (vhd.md §2.2 table). */
export const CHS_CREATORS: readonly string[] = ['vpc ', 'vs  ', 'qemu'];

/**
 * The virtual size a VHD has, as its producer meant it: the CHS geometry for Virtual PC,
 * Virtual Server and QEMU without force_size (unless the geometry is the maximum, which means
 * "too big for CHS": Disk2vhd, QEMU force_size), the current size field for every other creator
 * (Hyper-V "win ", "qem2", "vbox", "d2v\0", "tap\0", "CTXS", "wa\0\0", "vdkt", unknown ones).
 */
export function sizeRule(f: Pick<FooterValue, 'creatorApplication' | 'cylinders' | 'heads' | 'sectorsPerTrack'>): 'chs' | 'current' {
  const g = { cylinders: f.cylinders, heads: f.heads, sectors: f.sectorsPerTrack };
  const app = f.creatorApplication.toString('latin1');
  return CHS_CREATORS.includes(app) && !isMaxGeometry(g) && geometrySectors(g) > 0 ? 'chs' : 'current';
}

// ------------------------------------------------------------------ time (§1)

/** 2000-01-01T00:00:00Z in Unix milliseconds */
export const VHD_EPOCH_MS = Date.UTC(2000, 0, 1);

export function toVhdTime(d: Date): number {
  const s = Math.floor((d.getTime() - VHD_EPOCH_MS) / 1000);
  return Math.max(0, Math.min(0xffffffff, s));
}

export function fromVhdTime(seconds: number): Date {
  return new Date(VHD_EPOCH_MS + seconds * 1000);
}

// ------------------------------------------------------------------ unique ids (§10)

// VHD stores its ids in RFC 4122 order: the 'be' order of binary/guid.ts.

/** The 16 stored bytes as text, in stored order (as libvhdi and QEMU print them). */
export function uuidText(b: Buffer): string {
  return guidText(b, 'be');
}

export function parseUuid(text: string): Buffer | undefined {
  return guidFromText(text, 'be');
}

/**
 * The unique id for an identity given by a chain operation: a UUID is used as it is; any other
 * text (commit makes 8-hex-digit identities, as for VMDK) becomes a name-based UUID (SHA-1,
 * version 5 bits), so the same text always gives the same bytes in the base and in its child.
 */
export function uuidFromIdentity(text: string): Buffer {
  return guidFromIdentity(text, 'be', 'vdkit-vhd-identity:');
}

export function newUniqueId(): Buffer {
  return newGuid('be');
}

// ------------------------------------------------------------------ strings

/** UTF-16BE bytes until the first NUL code unit (the parent unicode name). */
export function decodeUtf16be(b: Buffer): string {
  let end = 0;
  while (end + 1 < b.length && (b[end] !== 0 || b[end + 1] !== 0)) end += 2;
  const swapped = Buffer.from(b.subarray(0, end));
  swapped.swap16();
  return swapped.toString('utf16le');
}

export function encodeUtf16be(s: string): Buffer {
  const b = Buffer.from(s, 'utf16le');
  b.swap16();
  return b;
}

/** Creator application / host OS codes as text: the 4 bytes, trailing NULs dropped ("d2v\0" -> "d2v"). */
export function codeText(b: Buffer): string {
  return b.toString('latin1').replace(/\0+$/, '');
}

export function codeBytes(s: string): Buffer {
  const b = Buffer.alloc(4);
  b.write(s.slice(0, 4), 'latin1');
  return b;
}
