/**
 * FAT12/16/32 on-disk records as field tables (little-endian), from Microsoft's "FAT32 File
 * System Specification" (1.03, 2000); names are the spec's without the BPB_/BS_/DIR_/LDIR_
 * prefixes, offsets in the comments are the spec's. The boot sector is a common part (the BPB
 * proper, bytes 0-35) followed by one of two extensions, so each is its own table.
 */
import { Struct, ascii, bytes, u16, u32, u8 } from '../../../binary/struct.js';

export const Bpb = new Struct(
  'FAT BPB',
  'le',
  [
    { name: 'jmpBoot', type: bytes(3) }, // 0
    { name: 'oemName', type: ascii(8) }, // 3
    { name: 'bytsPerSec', type: u16 }, // 11
    { name: 'secPerClus', type: u8 }, // 13
    { name: 'rsvdSecCnt', type: u16 }, // 14
    { name: 'numFats', type: u8 }, // 16
    { name: 'rootEntCnt', type: u16 }, // 17
    { name: 'totSec16', type: u16 }, // 19
    { name: 'media', type: u8 }, // 21
    { name: 'fatSz16', type: u16 }, // 22
    { name: 'secPerTrk', type: u16 }, // 24
    { name: 'numHeads', type: u16 }, // 26
    { name: 'hiddSec', type: u32 }, // 28
    { name: 'totSec32', type: u32 }, // 32
  ] as const,
  36,
);

/** the fields that close the boot record: at 36 on FAT12/16, at 64 on FAT32 */
export const BootTail = new Struct(
  'FAT extended boot record',
  'le',
  [
    { name: 'drvNum', type: u8 }, // 36 / 64
    { name: 'reserved1', type: u8 }, // 37 / 65
    { name: 'bootSig', type: u8 }, // 38 / 66: 0x29 when the three below are present (0x28: serial only)
    { name: 'volId', type: u32 }, // 39 / 67
    { name: 'volLab', type: bytes(11) }, // 43 / 71
    { name: 'filSysType', type: ascii(8) }, // 54 / 82: informative only, never used to pick the type
  ] as const,
  26,
);

export const Fat32Ext = new Struct(
  'FAT32 BPB',
  'le',
  [
    { name: 'fatSz32', type: u32 }, // 36
    { name: 'extFlags', type: u16 }, // 40: bit 7 = mirroring off, bits 0-3 = the active FAT
    { name: 'fsVer', type: u16 }, // 42
    { name: 'rootClus', type: u32 }, // 44
    { name: 'fsInfo', type: u16 }, // 48: FSInfo sector, whose free-cluster hints vdkit ignores
    { name: 'bkBootSec', type: u16 }, // 50
    { name: 'reserved', type: bytes(12) }, // 52
  ] as const,
  28,
);

/** FAT12/16's extension starts right after the BPB; FAT32's after its own 28 bytes */
export const TAIL_AT_FAT16 = Bpb.size;
export const TAIL_AT_FAT32 = Bpb.size + Fat32Ext.size;

export const DirEntry = new Struct(
  'FAT directory entry',
  'le',
  [
    { name: 'name', type: bytes(11) }, // 0: 8 + 3, space padded; name[0] 0xE5 deleted, 0x00 end, 0x05 = a real 0xE5
    { name: 'attr', type: u8 }, // 11
    { name: 'ntRes', type: u8 }, // 12: Windows NT's case bits (0x08 base, 0x10 extension in lower case)
    { name: 'crtTimeTenth', type: u8 }, // 13: 0-199 hundredths of a second added to crtTime
    { name: 'crtTime', type: u16 }, // 14
    { name: 'crtDate', type: u16 }, // 16
    { name: 'lstAccDate', type: u16 }, // 18
    { name: 'fstClusHi', type: u16 }, // 20: FAT32 only
    { name: 'wrtTime', type: u16 }, // 22
    { name: 'wrtDate', type: u16 }, // 24
    { name: 'fstClusLo', type: u16 }, // 26
    { name: 'fileSize', type: u32 }, // 28
  ] as const,
  32,
);

export const LfnEntry = new Struct(
  'FAT long name entry',
  'le',
  [
    { name: 'ord', type: u8 }, // 0: sequence number 1..20, 0x40 on the last (first stored) one
    { name: 'name1', type: bytes(10) }, // 1: UTF-16 units 1-5
    { name: 'attr', type: u8 }, // 11: 0x0F
    { name: 'type', type: u8 }, // 12
    { name: 'chksum', type: u8 }, // 13: checksum of the short name the sequence belongs to
    { name: 'name2', type: bytes(12) }, // 14: units 6-11
    { name: 'fstClusLo', type: u16 }, // 26: 0
    { name: 'name3', type: bytes(4) }, // 28: units 12-13
  ] as const,
  32,
);

export const ENTRY_SIZE = DirEntry.size;
export const ATTR_READ_ONLY = 0x01;
export const ATTR_HIDDEN = 0x02;
export const ATTR_SYSTEM = 0x04;
export const ATTR_VOLUME_ID = 0x08;
export const ATTR_DIRECTORY = 0x10;
export const ATTR_ARCHIVE = 0x20;
/** READ_ONLY | HIDDEN | SYSTEM | VOLUME_ID: a long-name part (checked under mask 0x3F) */
export const ATTR_LONG_NAME = 0x0f;
export const LAST_LONG_ENTRY = 0x40;
export const DELETED = 0xe5;
