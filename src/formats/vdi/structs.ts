/**
 * On-disk structures of VirtualBox VDI images (../shared/formats/vdi.md §2-4), and the UUID
 * byte order VirtualBox stores (§1: the first three groups little-endian, the rest as written).
 *
 * The header tables start at file offset 0 (pre-header included), so `offsetOf` gives the
 * absolute file offset the spec tables list: signature @0x40, cbHeader @0x48, offBlocks @0x154.
 */
import { bytes, defineStruct, u32, u64 } from '../../binary/struct.js';
import { NULL_GUID, guidFromText, guidText, isNullGuid, newGuid } from '../../binary/guid.js';

export const VDI_SIGNATURE = 0xbeda107f;
/** version word (major << 16 | minor) we write: 1.1 */
export const VDI_VERSION_1_1 = 0x00010001;
/** the only major-0 version VirtualBox reads: the legacy v0 header */
export const VDI_VERSION_LEGACY = 0x00000002;

export const PRE_HEADER_SIZE = 0x48;
/** cbHeader of a v1 header (QEMU writes it) */
export const HEADER_V1_SIZE = 0x180;
/** cbHeader of a v1+ header (VirtualBox writes it: v1 plus the LCHS geometry) */
export const HEADER_V1PLUS_SIZE = 0x190;
export const HEADER_V0_SIZE = 348;

export const TYPE_NORMAL = 1;
export const TYPE_FIXED = 2;
export const TYPE_UNDO = 3;
export const TYPE_DIFF = 4;

/** the only image flag bits VirtualBox tolerates (ZERO_EXPAND and the two it maps to FIXED/DIFF) */
export const KNOWN_FLAGS = 0x001 | 0x100 | 0x200;

/** block map entry: never allocated (a diff image reads the parent here) */
export const BLOCK_FREE = 0xffffffff;
/** block map entry: reads as zeros, even over a parent */
export const BLOCK_ZERO = 0xfffffffe;

export const SECTOR = 512;
export const DEFAULT_BLOCK_SIZE = 1024 * 1024;
/** VirtualBox aligns the block map and the data area to 1 MiB (VDI_DATA_ALIGN) */
export const DATA_ALIGN = 1024 * 1024;

export const FILE_INFO_VBOX = '<<< Oracle VM VirtualBox Disk Image >>>\n';

const PRE_HEADER_FIELDS = [
  { name: 'fileInfo', type: bytes(64) },
  { name: 'signature', type: u32 },
  { name: 'version', type: u32 },
] as const;

/** Pre-header: the same for every version. */
export const VdiPreHeader = defineStruct('VdiPreHeader', 'le', PRE_HEADER_FIELDS, PRE_HEADER_SIZE);

const V1_FIELDS = [
  ...PRE_HEADER_FIELDS,
  { name: 'cbHeader', type: u32 },
  { name: 'type', type: u32 },
  { name: 'flags', type: u32 },
  { name: 'comment', type: bytes(256) },
  { name: 'offBlocks', type: u32 },
  { name: 'offData', type: u32 },
  { name: 'legacyCylinders', type: u32 },
  { name: 'legacyHeads', type: u32 },
  { name: 'legacySectors', type: u32 },
  { name: 'legacySectorSize', type: u32 },
  { name: 'dummy', type: u32 },
  { name: 'cbDisk', type: u64 },
  { name: 'cbBlock', type: u32 },
  { name: 'cbBlockExtra', type: u32 },
  { name: 'cBlocks', type: u32 },
  { name: 'cBlocksAllocated', type: u32 },
  { name: 'uuidCreate', type: bytes(16) },
  { name: 'uuidModify', type: bytes(16) },
  { name: 'uuidLinkage', type: bytes(16) },
  { name: 'uuidParentModify', type: bytes(16) },
] as const;

const V1PLUS_FIELDS = [
  ...V1_FIELDS,
  { name: 'lchsCylinders', type: u32 },
  { name: 'lchsHeads', type: u32 },
  { name: 'lchsSectors', type: u32 },
  { name: 'lchsSectorSize', type: u32 },
] as const;

/** Pre-header + header v1 (cbHeader 0x180): what QEMU writes. */
export const VdiHeaderV1 = defineStruct('VdiHeader', 'le', V1_FIELDS, PRE_HEADER_SIZE + HEADER_V1_SIZE);
/** Pre-header + header v1+ (cbHeader 0x190): what VirtualBox (and vdkit) writes. */
export const VdiHeaderV1Plus = defineStruct('VdiHeader', 'le', V1PLUS_FIELDS, PRE_HEADER_SIZE + HEADER_V1PLUS_SIZE);
export type VdiHeaderValue = ReturnType<typeof VdiHeaderV1Plus.decode>;
export type VdiHeaderField = Parameters<typeof VdiHeaderV1Plus.offsetOf>[0];

/** Pre-header + legacy header v0 (version 0x00000002, read only): no offsets, map right after it. */
export const VdiHeaderV0 = defineStruct(
  'VdiHeaderV0',
  'le',
  [
    ...PRE_HEADER_FIELDS,
    { name: 'type', type: u32 },
    { name: 'flags', type: u32 },
    { name: 'comment', type: bytes(256) },
    { name: 'legacyCylinders', type: u32 },
    { name: 'legacyHeads', type: u32 },
    { name: 'legacySectors', type: u32 },
    { name: 'legacySectorSize', type: u32 },
    { name: 'cbDisk', type: u64 },
    { name: 'cbBlock', type: u32 },
    { name: 'cBlocks', type: u32 },
    { name: 'cBlocksAllocated', type: u32 },
    { name: 'uuidCreate', type: bytes(16) },
    { name: 'uuidModify', type: bytes(16) },
    { name: 'uuidLinkage', type: bytes(16) },
  ] as const,
  PRE_HEADER_SIZE + HEADER_V0_SIZE,
);

// ------------------------------------------------------------------ UUIDs

// VirtualBox's RTUUID is the Microsoft GUID layout: the 'le' order of binary/guid.ts.

export const NULL_UUID = NULL_GUID;

/** The 16 stored bytes (RTUUID, mixed endian) as lowercase RFC-4122 text. */
export function uuidToText(b: Buffer): string {
  return guidText(b, 'le');
}

/** RFC-4122 text (optionally in braces, any case, with its dashes) to the 16 bytes VirtualBox stores; undefined if not a UUID. */
export function uuidFromText(text: string): Buffer | undefined {
  return guidFromText(text, 'le', { dashes: 'required' });
}

export function isNullUuid(b: Buffer): boolean {
  return isNullGuid(b);
}

/** A random (version 4) UUID in stored byte order. */
export function newUuid(): Buffer {
  return newGuid('le');
}

/** Layout of a fresh image as VirtualBox makes it (vdi.md §11.2): map at 1 MiB, data 1 MiB aligned. */
export function freshLayout(cBlocks: number): { offBlocks: number; offData: number } {
  const offBlocks = alignUp(PRE_HEADER_SIZE + HEADER_V1PLUS_SIZE, DATA_ALIGN);
  const offData = alignUp(offBlocks + 4 * cBlocks, DATA_ALIGN);
  return { offBlocks, offData };
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}
