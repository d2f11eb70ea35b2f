/**
 * On-disk structures of Microsoft VHDX (vhd.md part 2, §15-§16), all little-endian: the file
 * type identifier, the two 4 KiB headers, the region table, the metadata table and its items,
 * the BAT arithmetic (chunk ratio, entry indexes and counts), the log entry pieces and the
 * parent locator; and the CRC-32C checksums (GUIDs, stored in Microsoft layout, are binary/guid's
 * 'le' order). Nothing here does I/O.
 */
import { guidFromText, guidText } from '../../binary/guid.js';
import { crc32cWithZeroField } from '../../binary/crc32c.js';
import { ascii, bytes, defineStruct, reserved, u16, u32, u64 } from '../../binary/struct.js';
import { DiskError } from '../../core/errors.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

export const FILE_SIGNATURE = 'vhdxfile';
export const HEADER_SIGNATURE = 'head';
export const REGION_SIGNATURE = 'regi';
export const METADATA_SIGNATURE = 'metadata';
export const LOG_ENTRY_SIGNATURE = 'loge';
export const LOG_DATA_DESC_SIGNATURE = 'desc';
export const LOG_ZERO_DESC_SIGNATURE = 'zero';
export const LOG_DATA_SECTOR_SIGNATURE = 'data';

/** where the structures of the first MiB live (vhd.md §16) */
export const FILE_ID_OFFSET = 0;
export const HEADER_OFFSETS = [64 * KiB, 128 * KiB] as const;
export const REGION_TABLE_OFFSETS = [192 * KiB, 256 * KiB] as const;
export const HEADER_SIZE = 4 * KiB;
export const REGION_TABLE_SIZE = 64 * KiB;
/** the header section: file identifier, two headers, two region tables, reserved up to 1 MiB */
export const HEADER_SECTION = MiB;
/** everything after the header section is placed in 1 MiB units */
export const ALIGN = MiB;
export const LOG_SECTOR = 4 * KiB;
export const METADATA_TABLE_SIZE = 64 * KiB;

export const MAX_REGION_ENTRIES = 2047;
export const MAX_METADATA_ENTRIES = 2047;
/** a metadata item is at most 1 MiB (MS-VHDX 2.6.1.2) */
export const MAX_METADATA_ITEM = MiB;
export const MIN_BLOCK_SIZE = MiB;
export const MAX_BLOCK_SIZE = 256 * MiB;
export const MAX_VIRTUAL_SIZE = 64 * TiB;
/** 2^23 sectors per chunk: one sector bitmap block (1 MiB, one bit per sector) covers a chunk */
export const SECTORS_PER_CHUNK = 2 ** 23;
export const BITMAP_BLOCK_SIZE = MiB;
/** BAT entries we hold in memory (5 bytes each: 80 MiB); 64 TiB with 4 MiB blocks needs 16.8 M */
export const MAX_BAT_ENTRIES = 2 ** 24 + 2 ** 20;
/** key/value pairs we accept in a parent locator (Hyper-V writes 5) */
export const MAX_LOCATOR_ENTRIES = 256;
/** a log we read into memory to replay is at most this long (Hyper-V and QEMU write 1 MiB) */
export const MAX_LOG_LENGTH = 32 * MiB;

/** payload block states (vhd.md §16.4) */
export const PAYLOAD = Object.freeze({
  NOT_PRESENT: 0,
  UNDEFINED: 1,
  ZERO: 2,
  UNMAPPED: 3,
  /** UNMAPPED in the v0.95 draft of the specification */
  UNMAPPED_V095: 5,
  FULLY_PRESENT: 6,
  PARTIALLY_PRESENT: 7,
});
export const PAYLOAD_STATE_NAMES: Record<number, string> = {
  0: 'NOT_PRESENT',
  1: 'UNDEFINED',
  2: 'ZERO',
  3: 'UNMAPPED',
  5: 'UNMAPPED (v0.95)',
  6: 'FULLY_PRESENT',
  7: 'PARTIALLY_PRESENT',
};
/** sector bitmap block states */
export const BITMAP = Object.freeze({ NOT_PRESENT: 0, PRESENT: 6 });

/** FileParameters flags */
export const LEAVE_BLOCKS_ALLOCATED = 0x1;
export const HAS_PARENT = 0x2;
/** region table entry flags */
export const REGION_REQUIRED = 0x1;
/** metadata table entry flags */
export const META_IS_USER = 0x1;
export const META_IS_VIRTUAL_DISK = 0x2;
export const META_IS_REQUIRED = 0x4;

export const GUIDS = Object.freeze({
  BAT_REGION: '2dc27766-f623-4200-9d64-115e9bfd4a08',
  METADATA_REGION: '8b7ca206-4790-4b9a-b8fe-575f050f886e',
  FILE_PARAMETERS: 'caa16737-fa36-4d43-b3b6-33f0aa44e76b',
  VIRTUAL_DISK_SIZE: '2fa54224-cd1b-4876-b211-5dbed83bf4b8',
  VIRTUAL_DISK_ID: 'beca12ab-b2e6-4523-93ef-c309e000c746',
  LOGICAL_SECTOR_SIZE: '8141bf1d-a96f-4709-ba47-f233a8faab5f',
  PHYSICAL_SECTOR_SIZE: 'cda348c7-445d-4471-9cc9-e9885251c556',
  PARENT_LOCATOR: 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c',
  /** locator type of a VHDX parent */
  VHDX_PARENT_LOCATOR_TYPE: 'b04aefb7-d19e-4a81-b789-25b8e9445913',
});

/** the names vdkit gives the known metadata items (in errors and findings) */
export const ITEM_NAMES: Record<string, string> = {
  [GUIDS.FILE_PARAMETERS]: 'fileParameters',
  [GUIDS.VIRTUAL_DISK_SIZE]: 'virtualDiskSize',
  [GUIDS.VIRTUAL_DISK_ID]: 'virtualDiskId',
  [GUIDS.LOGICAL_SECTOR_SIZE]: 'logicalSectorSize',
  [GUIDS.PHYSICAL_SECTOR_SIZE]: 'physicalSectorSize',
  [GUIDS.PARENT_LOCATOR]: 'parentLocator',
};
/** the smallest length each known item may have */
export const ITEM_MIN_LENGTH: Record<string, number> = {
  [GUIDS.FILE_PARAMETERS]: 8,
  [GUIDS.VIRTUAL_DISK_SIZE]: 8,
  [GUIDS.VIRTUAL_DISK_ID]: 16,
  [GUIDS.LOGICAL_SECTOR_SIZE]: 4,
  [GUIDS.PHYSICAL_SECTOR_SIZE]: 4,
  [GUIDS.PARENT_LOCATOR]: 20,
};

/** The creator string vdkit writes into the file type identifier. */
export const VDKIT_CREATOR = 'vdkit 0.1.0';

// ------------------------------------------------------------------ struct tables

export const FileIdentifier = defineStruct(
  'fileIdentifier',
  'le',
  [
    { name: 'signature', type: ascii(8) },
    { name: 'creator', type: bytes(512) },
    { name: 'reserved', type: reserved(64 * KiB - 520) },
  ] as const,
  64 * KiB,
);

export const Header = defineStruct(
  'header',
  'le',
  [
    { name: 'signature', type: ascii(4) },
    { name: 'checksum', type: u32 },
    { name: 'sequenceNumber', type: u64 },
    { name: 'fileWriteGuid', type: bytes(16) },
    { name: 'dataWriteGuid', type: bytes(16) },
    { name: 'logGuid', type: bytes(16) },
    { name: 'logVersion', type: u16 },
    { name: 'version', type: u16 },
    { name: 'logLength', type: u32 },
    { name: 'logOffset', type: u64 },
    { name: 'reserved', type: reserved(4016) },
  ] as const,
  HEADER_SIZE,
);
export type HeaderValue = ReturnType<typeof Header.decode>;

export const RegionTableHeader = defineStruct(
  'regionTable',
  'le',
  [
    { name: 'signature', type: ascii(4) },
    { name: 'checksum', type: u32 },
    { name: 'entryCount', type: u32 },
    { name: 'reserved', type: reserved(4) },
  ] as const,
  16,
);

export const RegionTableEntry = defineStruct(
  'regionTableEntry',
  'le',
  [
    { name: 'guid', type: bytes(16) },
    { name: 'fileOffset', type: u64 },
    { name: 'length', type: u32 },
    { name: 'flags', type: u32 },
  ] as const,
  32,
);

export const MetadataTableHeader = defineStruct(
  'metadataTable',
  'le',
  [
    { name: 'signature', type: ascii(8) },
    { name: 'reserved', type: reserved(2) },
    { name: 'entryCount', type: u16 },
    { name: 'reserved2', type: reserved(20) },
  ] as const,
  32,
);

export const MetadataTableEntry = defineStruct(
  'metadataTableEntry',
  'le',
  [
    { name: 'itemId', type: bytes(16) },
    { name: 'offset', type: u32 },
    { name: 'length', type: u32 },
    { name: 'flags', type: u32 },
    { name: 'reserved', type: reserved(4) },
  ] as const,
  32,
);

export const FileParameters = defineStruct(
  'fileParameters',
  'le',
  [
    { name: 'blockSize', type: u32 },
    { name: 'flags', type: u32 },
  ] as const,
  8,
);

export const ParentLocatorHeader = defineStruct(
  'parentLocator',
  'le',
  [
    { name: 'locatorType', type: bytes(16) },
    { name: 'reserved', type: reserved(2) },
    { name: 'keyValueCount', type: u16 },
  ] as const,
  20,
);

export const ParentLocatorEntry = defineStruct(
  'parentLocatorEntry',
  'le',
  [
    { name: 'keyOffset', type: u32 },
    { name: 'valueOffset', type: u32 },
    { name: 'keyLength', type: u16 },
    { name: 'valueLength', type: u16 },
  ] as const,
  12,
);

export const LogEntryHeader = defineStruct(
  'logEntry',
  'le',
  [
    { name: 'signature', type: ascii(4) },
    { name: 'checksum', type: u32 },
    { name: 'entryLength', type: u32 },
    { name: 'tail', type: u32 },
    { name: 'sequenceNumber', type: u64 },
    { name: 'descriptorCount', type: u32 },
    { name: 'reserved', type: reserved(4) },
    { name: 'logGuid', type: bytes(16) },
    { name: 'flushedFileOffset', type: u64 },
    { name: 'lastFileOffset', type: u64 },
  ] as const,
  64,
);
export type LogEntryHeaderValue = ReturnType<typeof LogEntryHeader.decode>;

/** data descriptor: the first 8 and last 4 bytes of the target sector travel in it */
export const LogDataDescriptor = defineStruct(
  'logDataDescriptor',
  'le',
  [
    { name: 'signature', type: ascii(4) },
    { name: 'trailingBytes', type: bytes(4) },
    { name: 'leadingBytes', type: bytes(8) },
    { name: 'fileOffset', type: u64 },
    { name: 'sequenceNumber', type: u64 },
  ] as const,
  32,
);

export const LogZeroDescriptor = defineStruct(
  'logZeroDescriptor',
  'le',
  [
    { name: 'signature', type: ascii(4) },
    { name: 'reserved', type: reserved(4) },
    { name: 'zeroLength', type: u64 },
    { name: 'fileOffset', type: u64 },
    { name: 'sequenceNumber', type: u64 },
  ] as const,
  32,
);

/** one 4 KiB data sector of a log entry: bytes 8..4091 of the target sector */
export const LogDataSector = defineStruct(
  'logDataSector',
  'le',
  [
    { name: 'signature', type: ascii(4) },
    { name: 'sequenceHigh', type: u32 },
    { name: 'data', type: bytes(4084) },
    { name: 'sequenceLow', type: u32 },
  ] as const,
  LOG_SECTOR,
);

/** descriptors that fit a log entry's first sector (after the 64-byte header) and later ones */
export const DESCRIPTORS_FIRST_SECTOR = (LOG_SECTOR - 64) / 32;
export const DESCRIPTORS_PER_SECTOR = LOG_SECTOR / 32;

/** 4 KiB sectors holding the entry header and `count` descriptors (never 0) */
export function descriptorSectors(count: number): number {
  return Math.ceil((count + 2) / DESCRIPTORS_PER_SECTOR);
}

// ------------------------------------------------------------------ checksums

/** CRC-32C of a structure whose checksum field (at offset 4 in every VHDX structure) counts as zero */
export function vhdxChecksum(buf: Buffer, at = 4): number {
  return crc32cWithZeroField(buf, at);
}

/** store the checksum of `buf` at offset `at` (in place), and return the buffer */
export function withChecksum(buf: Buffer, at = 4): Buffer {
  buf.writeUInt32LE(vhdxChecksum(buf, at), at);
  return buf;
}

export function encodeHeader(v: HeaderValue): Buffer {
  return withChecksum(Header.encode(v));
}

/**
 * What an identity that is not GUID text is hashed with (binary/guid guidFromIdentity): part of
 * the bytes a child records as its parent's id, so it must never change.
 */
export const IDENTITY_LABEL = 'vdkit-vhdx-identity:';

// ------------------------------------------------------------------ BAT arithmetic (§16.4)

/** payload blocks per chunk: (2^23 * logicalSectorSize) / blockSize */
export function chunkRatio(logicalSectorSize: number, blockSize: number): number {
  return (SECTORS_PER_CHUNK * logicalSectorSize) / blockSize;
}

/** BAT index of payload block n */
export function payloadIndex(n: number, cr: number): number {
  return n + Math.floor(n / cr);
}

/** BAT index of the sector bitmap entry of chunk k */
export function bitmapIndex(k: number, cr: number): number {
  return k * (cr + 1) + cr;
}

/** BAT entries of a disk with `blocks` payload blocks: D + floor((D-1)/CR), or ceil(D/CR)*(CR+1) with a parent */
export function batEntryCount(blocks: number, cr: number, hasParent: boolean): number {
  if (hasParent) return Math.ceil(blocks / cr) * (cr + 1);
  return blocks === 0 ? 0 : blocks + Math.floor((blocks - 1) / cr);
}

/** the raw 64-bit entry for a state and a file offset (a multiple of 1 MiB) */
export function batEntry(state: number, offsetMiB: number): bigint {
  return (BigInt(offsetMiB) << 20n) | BigInt(state);
}

/** QEMU's default block size for a new image (vhd.md §17): 8 MiB up to 1 GiB, 16 MiB up to 100 GiB, 32 MiB up to 32 TiB, 64 MiB above */
export function defaultBlockSize(capacity: number): number {
  if (capacity <= GiB) return 8 * MiB;
  if (capacity <= 100 * GiB) return 16 * MiB;
  if (capacity <= 32 * TiB) return 32 * MiB;
  return 64 * MiB;
}

// ------------------------------------------------------------------ parent locator (§16.6)

export interface ParentLocator {
  /** locator type GUID text */
  type: string;
  /** key -> value, in stored order; the first of duplicate keys wins */
  entries: Map<string, string>;
}

/**
 * Decode a parent locator item. Every offset and length is checked against the item before it
 * is used; `field` names in errors are `parentLocator.<field>` (keyValueCount, entry[i].*).
 */
export function decodeParentLocator(item: Buffer, path: string): ParentLocator {
  const bad = (field: string, message: string, expected: unknown, found: unknown) => new DiskError('CORRUPT', message, { path, struct: 'parentLocator', field: `parentLocator.${field}`, expected, found });
  if (item.length < ParentLocatorHeader.size) throw bad('length', 'the parent locator item is too short', `>= ${ParentLocatorHeader.size} bytes`, item.length);
  const h = ParentLocatorHeader.decode(item, 0, path);
  const count = h.keyValueCount;
  const room = Math.floor((item.length - ParentLocatorHeader.size) / ParentLocatorEntry.size);
  if (count > MAX_LOCATOR_ENTRIES || count > room) {
    throw bad('keyValueCount', 'too many parent locator entries', `<= ${Math.min(MAX_LOCATOR_ENTRIES, room)}`, count);
  }
  const entries = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const e = ParentLocatorEntry.decode(item, ParentLocatorHeader.size + i * ParentLocatorEntry.size, path);
    const text = (what: 'key' | 'value', offset: number, length: number): string => {
      if (length === 0 || length % 2 !== 0) throw bad(`entry[${i}].${what}Length`, `parent locator ${what} length must be a positive even number`, 'an even number > 0', length);
      if (offset < ParentLocatorHeader.size || offset + length > item.length) {
        throw bad(`entry[${i}].${what}Offset`, `parent locator ${what} lies outside the item`, `${ParentLocatorHeader.size}..${item.length - length}`, offset);
      }
      return item.toString('utf16le', offset, offset + length);
    };
    const key = text('key', e.keyOffset, e.keyLength);
    const value = text('value', e.valueOffset, e.valueLength);
    if (!entries.has(key)) entries.set(key, value);
  }
  return { type: guidText(h.locatorType, 'le'), entries };
}

/** Encode a VHDX parent locator item with these key/value pairs (UTF-16LE, no terminators). */
export function encodeParentLocator(pairs: readonly (readonly [string, string])[]): Buffer {
  const table = ParentLocatorHeader.size + pairs.length * ParentLocatorEntry.size;
  const strings: Buffer[] = [];
  const out = Buffer.alloc(table);
  ParentLocatorHeader.encode({ locatorType: guidFromText(GUIDS.VHDX_PARENT_LOCATOR_TYPE, 'le')!, keyValueCount: pairs.length }, out, 0);
  let at = table;
  pairs.forEach(([k, v], i) => {
    const kb = Buffer.from(k, 'utf16le');
    const vb = Buffer.from(v, 'utf16le');
    ParentLocatorEntry.encode({ keyOffset: at, valueOffset: at + kb.length, keyLength: kb.length, valueLength: vb.length }, out, ParentLocatorHeader.size + i * ParentLocatorEntry.size);
    strings.push(kb, vb);
    at += kb.length + vb.length;
  });
  return Buffer.concat([out, ...strings]);
}

/** the creator string of a file type identifier (UTF-16LE, up to the first NUL) */
export function creatorText(creator: Buffer): string {
  let end = 0;
  while (end + 1 < creator.length && (creator[end] !== 0 || creator[end + 1] !== 0)) end += 2;
  return creator.toString('utf16le', 0, end);
}

/** the layout of a new image (create.ts), as QEMU makes it; measure.ts needs it without create's code */
export const LOG_OFFSET = MiB;
export const LOG_LENGTH = MiB;
export const BAT_OFFSET = 2 * MiB;
export const METADATA_LENGTH = MiB;
/** QEMU starts the data area 4 MiB after the metadata region */
export const DATA_GAP = 4 * MiB;
/** block size of a new differencing image (what Hyper-V uses for children, whatever the parent's) */
export const CHILD_BLOCK_SIZE = 2 * MiB;
export const LOGICAL_SECTOR = 512;
export const PHYSICAL_SECTOR = 4096;
