/** On-disk structures of hosted sparse VMDK extents (VMware "Virtual Disk Format 5.0", §3-4 of NOTES.md). */
import { ascii, bytes, defineStruct, u8, u16, u32, u64, reserved } from '../../binary/struct.js';

export const SPARSE_MAGIC = 0x564d444b; // "KDMV" read as u32 LE
export const COWD_MAGIC = 0x44574f43; // "COWD"
export const GD_AT_END = 0xffffffffffffffffn;

export const FLAG_VALID_NEWLINE = 0x1;
export const FLAG_REDUNDANT_GD = 0x2;
export const FLAG_ZEROED_GTE = 0x4;
export const FLAG_COMPRESSED = 0x10000;
export const FLAG_MARKERS = 0x20000;
/** every flag bit we know; unknown bits above 0xffff are incompatible features */
export const KNOWN_FLAGS = FLAG_VALID_NEWLINE | FLAG_REDUNDANT_GD | FLAG_ZEROED_GTE | FLAG_COMPRESSED | FLAG_MARKERS;

export const COMPRESSION_NONE = 0;
export const COMPRESSION_DEFLATE = 1;

export const SparseExtentHeader = defineStruct(
  'SparseExtentHeader',
  'le',
  [
    { name: 'magicNumber', type: u32, expect: SPARSE_MAGIC },
    { name: 'version', type: u32 },
    { name: 'flags', type: u32 },
    { name: 'capacity', type: u64 }, // sectors
    { name: 'grainSize', type: u64 }, // sectors
    { name: 'descriptorOffset', type: u64 }, // sectors
    { name: 'descriptorSize', type: u64 }, // sectors
    { name: 'numGTEsPerGT', type: u32 },
    { name: 'rgdOffset', type: u64 }, // sectors
    { name: 'gdOffset', type: u64 }, // sectors
    { name: 'overHead', type: u64 }, // sectors
    { name: 'uncleanShutdown', type: u8 },
    { name: 'singleEndLineChar', type: u8 },
    { name: 'nonEndLineChar', type: u8 },
    { name: 'doubleEndLineChar1', type: u8 },
    { name: 'doubleEndLineChar2', type: u8 },
    { name: 'compressAlgorithm', type: u16 },
    { name: 'pad', type: reserved(433) },
  ] as const,
  512,
);
export type SparseExtentHeaderValue = ReturnType<typeof SparseExtentHeader.decode>;

/** Head of a stream marker (§4.2): a grain marker when size > 0, else a metadata marker. */
export const MarkerHead = defineStruct(
  'Marker',
  'le',
  [
    { name: 'val', type: u64 }, // grain: LBA in sectors; metadata: sectors that follow
    { name: 'size', type: u32 }, // grain: compressed bytes; metadata: 0
    { name: 'type', type: u32 }, // metadata: 0 EOS, 1 GT, 2 GD, 3 footer
  ] as const,
  16,
);

export const MARKER_EOS = 0;
export const MARKER_GT = 1;
export const MARKER_GD = 2;
export const MARKER_FOOTER = 3;

/** 12 bytes of a grain marker precede the compressed data */
export const GRAIN_MARKER_HEAD = 12;


// ------------------------------------------------------------------ ESXi delta extents (§5 of vmdk.md)

/** COWD header size: 4 sectors; the grain directory normally starts right after it. */
export const COWD_HEADER_BYTES = 2048;
/** every COWD grain table has 4096 u32 entries (16 KiB, 32 sectors) */
export const COWD_GTES_PER_GT = 4096;

/**
 * ESX sparse ("COWD", vmfsSparse redo log) header. Offsets 32..1055 are a union: a base
 * disk keeps its geometry there (cylinders, heads, sectors as u32), a delta the parent's file
 * name (often empty in recent files); readers use neither.
 */
export const CowdHeader = defineStruct(
  'CowdHeader',
  'le',
  [
    { name: 'magicNumber', type: u32, expect: COWD_MAGIC },
    { name: 'version', type: u32 }, // 1
    { name: 'flags', type: u32 }, // 3
    { name: 'numSectors', type: u32 }, // capacity, sectors
    { name: 'grainSize', type: u32 }, // sectors, 1 (default) .. 2048
    { name: 'gdOffset', type: u32 }, // sectors, 4
    { name: 'numGDEntries', type: u32 }, // ceil(numSectors / (4096 * grainSize))
    { name: 'freeSector', type: u32 }, // next free sector, <= file length
    { name: 'parentOrGeometry', type: bytes(1024) }, // union, see above
    { name: 'parentGeneration', type: u32 },
    { name: 'generation', type: u32 },
    { name: 'name', type: ascii(60) },
    { name: 'description', type: ascii(512) },
    { name: 'savedGeneration', type: u32 },
    { name: 'reserved', type: reserved(8) },
    { name: 'uncleanShutdown', type: u32 },
    { name: 'padding', type: reserved(396) },
  ] as const,
  COWD_HEADER_BYTES,
);

export const SESPARSE_CONST_MAGIC = 0xcafebaben;
export const SESPARSE_VOLATILE_MAGIC = 0xcafecafen;
/** "2.1": the only version QEMU (and so anyone we can check against) reads */
export const SESPARSE_VERSION = 0x0000000200000001n;
/** grain 8 sectors (4 KiB) and grain tables of 64 sectors (4096 u64 entries): QEMU's strict values */
export const SESPARSE_GRAIN_SECTORS = 8;
export const SESPARSE_GT_SECTORS = 64;

/** SESparse constant header (sector 0): 26 u64 fields (sectors unless noted) and zero padding. */
export const SeSparseConstHeader = defineStruct(
  'SeSparseConstHeader',
  'le',
  [
    { name: 'magic', type: u64, expect: SESPARSE_CONST_MAGIC },
    { name: 'version', type: u64 },
    { name: 'capacity', type: u64 },
    { name: 'grainSize', type: u64 },
    { name: 'grainTableSize', type: u64 },
    { name: 'flags', type: u64 },
    { name: 'reserved1', type: u64 },
    { name: 'reserved2', type: u64 },
    { name: 'reserved3', type: u64 },
    { name: 'reserved4', type: u64 },
    { name: 'volatileHeaderOffset', type: u64 },
    { name: 'volatileHeaderSize', type: u64 },
    { name: 'journalHeaderOffset', type: u64 },
    { name: 'journalHeaderSize', type: u64 },
    { name: 'journalOffset', type: u64 },
    { name: 'journalSize', type: u64 },
    { name: 'grainDirOffset', type: u64 },
    { name: 'grainDirSize', type: u64 },
    { name: 'grainTablesOffset', type: u64 },
    { name: 'grainTablesSize', type: u64 },
    { name: 'freeBitmapOffset', type: u64 },
    { name: 'freeBitmapSize', type: u64 },
    { name: 'backmapOffset', type: u64 },
    { name: 'backmapSize', type: u64 },
    { name: 'grainsOffset', type: u64 },
    { name: 'grainsSize', type: u64 },
    { name: 'pad', type: bytes(304) }, // must be zero (checked: QEMU refuses anything else)
  ] as const,
  512,
);

/** SESparse volatile header (at volatileHeaderOffset): changes while ESXi has the disk open. */
export const SeSparseVolatileHeader = defineStruct(
  'SeSparseVolatileHeader',
  'le',
  [
    { name: 'magic', type: u64, expect: SESPARSE_VOLATILE_MAGIC },
    { name: 'freeGtNumber', type: u64 },
    { name: 'nextTxnSeqNumber', type: u64 },
    { name: 'replayJournal', type: u64 }, // non-zero: the journal must be replayed first
    { name: 'pad', type: bytes(480) },
  ] as const,
  512,
);
