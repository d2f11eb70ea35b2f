/**
 * ext2/3/4 on-disk records as field tables (little-endian throughout), transcribed from the
 * layout in the kernel's Documentation/filesystems/ext4 (names are the spec's, without the
 * s_/bg_/i_/eh_ prefixes); offsets in the comments are the spec's. Fields vdkit does not read
 * are folded into `reserved` runs so the tables stay short and their sizes still check.
 */
import { Struct, bytes, reserved, u16, u32, u8 } from '../../../binary/struct.js';

export const EXT_MAGIC = 0xef53;
/** the superblock is always at byte 1024, whatever the block size */
export const SUPERBLOCK_OFFSET = 1024;

export const Superblock = new Struct(
  'ext superblock',
  'le',
  [
    { name: 'inodesCount', type: u32 }, // 0x00
    { name: 'blocksCountLo', type: u32 }, // 0x04
    { name: 'rBlocksCountLo', type: u32 }, // 0x08
    { name: 'freeBlocksCountLo', type: u32 }, // 0x0c
    { name: 'freeInodesCount', type: u32 }, // 0x10
    { name: 'firstDataBlock', type: u32 }, // 0x14
    { name: 'logBlockSize', type: u32 }, // 0x18
    { name: 'logClusterSize', type: u32 }, // 0x1c
    { name: 'blocksPerGroup', type: u32 }, // 0x20
    { name: 'clustersPerGroup', type: u32 }, // 0x24
    { name: 'inodesPerGroup', type: u32 }, // 0x28
    { name: 'mtime', type: u32 }, // 0x2c
    { name: 'wtime', type: u32 }, // 0x30
    { name: 'mntCount', type: u16 }, // 0x34
    { name: 'maxMntCount', type: u16 }, // 0x36
    { name: 'magic', type: u16, expect: EXT_MAGIC }, // 0x38
    { name: 'state', type: u16 }, // 0x3a
    { name: 'errors', type: u16 }, // 0x3c
    { name: 'minorRevLevel', type: u16 }, // 0x3e
    { name: 'lastcheck', type: u32 }, // 0x40
    { name: 'checkinterval', type: u32 }, // 0x44
    { name: 'creatorOs', type: u32 }, // 0x48
    { name: 'revLevel', type: u32 }, // 0x4c
    { name: 'defResuid', type: u16 }, // 0x50
    { name: 'defResgid', type: u16 }, // 0x52
    { name: 'firstIno', type: u32 }, // 0x54
    { name: 'inodeSize', type: u16 }, // 0x58
    { name: 'blockGroupNr', type: u16 }, // 0x5a
    { name: 'featureCompat', type: u32 }, // 0x5c
    { name: 'featureIncompat', type: u32 }, // 0x60
    { name: 'featureRoCompat', type: u32 }, // 0x64
    { name: 'uuid', type: bytes(16) }, // 0x68
    { name: 'volumeName', type: bytes(16) }, // 0x78
    { name: 'lastMounted', type: bytes(64) }, // 0x88
    { name: 'algorithmUsageBitmap', type: u32 }, // 0xc8
    { name: 'preallocBlocks', type: u8 }, // 0xcc
    { name: 'preallocDirBlocks', type: u8 }, // 0xcd
    { name: 'reservedGdtBlocks', type: u16 }, // 0xce
    { name: 'journalUuid', type: bytes(16) }, // 0xd0
    { name: 'journalInum', type: u32 }, // 0xe0
    { name: 'journalDev', type: u32 }, // 0xe4
    { name: 'lastOrphan', type: u32 }, // 0xe8
    { name: 'hashSeed', type: bytes(16) }, // 0xec
    { name: 'defHashVersion', type: u8 }, // 0xfc
    { name: 'jnlBackupType', type: u8 }, // 0xfd
    { name: 'descSize', type: u16 }, // 0xfe
    { name: 'defaultMountOpts', type: u32 }, // 0x100
    { name: 'firstMetaBg', type: u32 }, // 0x104
    { name: 'mkfsTime', type: u32 }, // 0x108
    { name: 'jnlBlocks', type: reserved(68) }, // 0x10c
    { name: 'blocksCountHi', type: u32 }, // 0x150
    { name: 'rBlocksCountHi', type: u32 }, // 0x154
    { name: 'freeBlocksCountHi', type: u32 }, // 0x158
    { name: 'minExtraIsize', type: u16 }, // 0x15c
    { name: 'wantExtraIsize', type: u16 }, // 0x15e
    { name: 'flags', type: u32 }, // 0x160
    { name: 'raidAndMmp', type: reserved(0x174 - 0x164) }, // 0x164 raid_stride .. raid_stripe_width
    { name: 'logGroupsPerFlex', type: u8 }, // 0x174
    { name: 'checksumType', type: u8 }, // 0x175
    { name: 'middle', type: reserved(0x24c - 0x176) }, // 0x176 .. overhead_clusters
    { name: 'backupBgs0', type: u32 }, // 0x24c
    { name: 'backupBgs1', type: u32 }, // 0x250
    { name: 'tail', type: reserved(0x3fc - 0x254) }, // 0x254 .. s_reserved
    { name: 'checksum', type: u32 }, // 0x3fc
  ] as const,
  1024,
);

/** a 64-byte descriptor; with 32-byte descriptors (no 64bit feature) only the first half exists */
export const GroupDesc = new Struct(
  'ext group descriptor',
  'le',
  [
    { name: 'blockBitmapLo', type: u32 }, // 0x00
    { name: 'inodeBitmapLo', type: u32 }, // 0x04
    { name: 'inodeTableLo', type: u32 }, // 0x08
    { name: 'freeBlocksCountLo', type: u16 }, // 0x0c
    { name: 'freeInodesCountLo', type: u16 }, // 0x0e
    { name: 'usedDirsCountLo', type: u16 }, // 0x10
    { name: 'flags', type: u16 }, // 0x12
    { name: 'rest32', type: reserved(0x20 - 0x14) }, // 0x14 exclude bitmap, checksums, itable_unused
    { name: 'blockBitmapHi', type: u32 }, // 0x20
    { name: 'inodeBitmapHi', type: u32 }, // 0x24
    { name: 'inodeTableHi', type: u32 }, // 0x28
    { name: 'rest64', type: reserved(0x40 - 0x2c) }, // 0x2c
  ] as const,
  64,
);

/** the 128-byte base inode (ext2's whole inode); larger inodes add InodeExtra after it */
export const Inode = new Struct(
  'ext inode',
  'le',
  [
    { name: 'mode', type: u16 }, // 0x00
    { name: 'uid', type: u16 }, // 0x02
    { name: 'sizeLo', type: u32 }, // 0x04
    { name: 'atime', type: u32 }, // 0x08
    { name: 'ctime', type: u32 }, // 0x0c
    { name: 'mtime', type: u32 }, // 0x10
    { name: 'dtime', type: u32 }, // 0x14
    { name: 'gid', type: u16 }, // 0x18
    { name: 'linksCount', type: u16 }, // 0x1a
    { name: 'blocksLo', type: u32 }, // 0x1c
    { name: 'flags', type: u32 }, // 0x20
    { name: 'osd1', type: u32 }, // 0x24
    { name: 'block', type: bytes(60) }, // 0x28 i_block[15]
    { name: 'generation', type: u32 }, // 0x64
    { name: 'fileAclLo', type: u32 }, // 0x68
    { name: 'sizeHigh', type: u32 }, // 0x6c
    { name: 'obsoFaddr', type: u32 }, // 0x70
    { name: 'blocksHigh', type: u16 }, // 0x74 osd2.linux2
    { name: 'fileAclHigh', type: u16 }, // 0x76
    { name: 'uidHigh', type: u16 }, // 0x78
    { name: 'gidHigh', type: u16 }, // 0x7a
    { name: 'checksumLo', type: u16 }, // 0x7c
    { name: 'osd2Reserved', type: u16 }, // 0x7e
  ] as const,
  128,
);

/** the fields after the base inode, present as far as i_extra_isize reaches */
export const InodeExtra = new Struct(
  'ext inode extra',
  'le',
  [
    { name: 'extraIsize', type: u16 }, // 0x80
    { name: 'checksumHi', type: u16 }, // 0x82
    { name: 'ctimeExtra', type: u32 }, // 0x84
    { name: 'mtimeExtra', type: u32 }, // 0x88
    { name: 'atimeExtra', type: u32 }, // 0x8c
    { name: 'crtime', type: u32 }, // 0x90
    { name: 'crtimeExtra', type: u32 }, // 0x94
    { name: 'versionHi', type: u32 }, // 0x98
    { name: 'projid', type: u32 }, // 0x9c
  ] as const,
  32,
);

export const EXTENT_MAGIC = 0xf30a;
export const ExtentHeader = new Struct(
  'ext extent header',
  'le',
  [
    { name: 'magic', type: u16 }, // 0x0 (checked by the caller, to name the inode)
    { name: 'entries', type: u16 }, // 0x2
    { name: 'max', type: u16 }, // 0x4
    { name: 'depth', type: u16 }, // 0x6
    { name: 'generation', type: u32 }, // 0x8
  ] as const,
  12,
);
export const ExtentIndex = new Struct(
  'ext extent index',
  'le',
  [
    { name: 'block', type: u32 }, // ei_block
    { name: 'leafLo', type: u32 },
    { name: 'leafHi', type: u16 },
    { name: 'unused', type: u16 },
  ] as const,
  12,
);
export const Extent = new Struct(
  'ext extent',
  'le',
  [
    { name: 'block', type: u32 }, // ee_block
    { name: 'len', type: u16 }, // > 32768: uninitialized, len - 32768 blocks
    { name: 'startHi', type: u16 },
    { name: 'startLo', type: u32 },
  ] as const,
  12,
);

/** ext4_dir_entry_2 (with the filetype feature; without it, name_len is a u16 and no type) */
export const DirEntry = new Struct(
  'ext directory entry',
  'le',
  [
    { name: 'inode', type: u32 },
    { name: 'recLen', type: u16 },
    { name: 'nameLen', type: u8 },
    { name: 'fileType', type: u8 },
  ] as const,
  8,
);

export const XATTR_MAGIC = 0xea020000;
/** ext4_xattr_entry, followed by the name padded to 4 bytes */
export const XattrEntry = new Struct(
  'ext xattr entry',
  'le',
  [
    { name: 'nameLen', type: u8 },
    { name: 'nameIndex', type: u8 },
    { name: 'valueOffs', type: u16 },
    { name: 'valueInum', type: u32 },
    { name: 'valueSize', type: u32 },
    { name: 'hash', type: u32 },
  ] as const,
  16,
);
