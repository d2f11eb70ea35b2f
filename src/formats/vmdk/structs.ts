/** On-disk structures of hosted sparse VMDK extents (VMware "Virtual Disk Format 5.0", §3-4 of NOTES.md). */
import { defineStruct, u8, u16, u32, u64, reserved } from '../../binary/struct.js';

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

