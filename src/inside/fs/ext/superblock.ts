/**
 * The ext superblock: decoded, checked against the source it lives in, and reduced to the
 * geometry the reader needs. Feature bits are the guard: an INCOMPAT feature vdkit does not know
 * (or knows and cannot read) is refused by name, as the kernel refuses to mount; RO_COMPAT
 * features never change how a reader finds data, so all of them are accepted.
 */
import { DiskError } from '../../../core/errors.js';
import type { FsWarning } from '../types.js';
import { Superblock, SUPERBLOCK_OFFSET } from './structs.js';

/** [bit, dumpe2fs name] */
type FeatureTable = readonly (readonly [number, string])[];

export const COMPAT: FeatureTable = [
  [0x1, 'dir_prealloc'],
  [0x2, 'imagic_inodes'],
  [0x4, 'has_journal'],
  [0x8, 'ext_attr'],
  [0x10, 'resize_inode'],
  [0x20, 'dir_index'],
  [0x40, 'lazy_bg'],
  [0x80, 'exclude_inode'],
  [0x100, 'exclude_bitmap'],
  [0x200, 'sparse_super2'],
  [0x400, 'fast_commit'],
  [0x800, 'stable_inodes'],
  [0x1000, 'orphan_file'],
];

export const INCOMPAT: FeatureTable = [
  [0x1, 'compression'],
  [0x2, 'filetype'],
  [0x4, 'needs_recovery'],
  [0x8, 'journal_dev'],
  [0x10, 'meta_bg'],
  [0x40, 'extent'],
  [0x80, '64bit'],
  [0x100, 'mmp'],
  [0x200, 'flex_bg'],
  [0x400, 'ea_inode'],
  [0x1000, 'dirdata'],
  [0x2000, 'metadata_csum_seed'],
  [0x4000, 'large_dir'],
  [0x8000, 'inline_data'],
  [0x10000, 'encrypt'],
  [0x20000, 'casefold'],
];

export const RO_COMPAT: FeatureTable = [
  [0x1, 'sparse_super'],
  [0x2, 'large_file'],
  [0x4, 'btree_dir'],
  [0x8, 'huge_file'],
  [0x10, 'uninit_bg'],
  [0x20, 'dir_nlink'],
  [0x40, 'extra_isize'],
  [0x80, 'snapshot'],
  [0x100, 'quota'],
  [0x200, 'bigalloc'],
  [0x400, 'metadata_csum'],
  [0x800, 'replica'],
  [0x1000, 'read-only'],
  [0x2000, 'project'],
  [0x4000, 'shared_blocks'],
  [0x8000, 'verity'],
  [0x10000, 'orphan_present'],
];

export const INCOMPAT_FILETYPE = 0x2;
export const INCOMPAT_RECOVER = 0x4;
export const INCOMPAT_META_BG = 0x10;
export const INCOMPAT_EXTENTS = 0x40;
export const INCOMPAT_64BIT = 0x80;
export const INCOMPAT_INLINE_DATA = 0x8000;
export const RO_COMPAT_SPARSE_SUPER = 0x1;
export const RO_COMPAT_HUGE_FILE = 0x8;
export const COMPAT_HAS_JOURNAL = 0x4;
export const COMPAT_SPARSE_SUPER2 = 0x200;

/**
 * INCOMPAT features this reader handles. needs_recovery is read with a warning (the journal is
 * not replayed); mmp only guards writers; metadata_csum_seed, large_dir and casefold change no
 * on-disk shape a linear reader depends on (casefold only makes lookups case-insensitive: exact
 * names still match). Refused: compression (never merged), journal_dev (a journal, not a
 * filesystem), dirdata (directory entries carry extra data), encrypt (names and data are
 * ciphertext).
 */
const READABLE_INCOMPAT = 0x2 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x2000 | 0x4000 | 0x8000 | 0x20000;

function names(table: FeatureTable, bits: number): string[] {
  return table.filter(([b]) => (bits & b) !== 0).map(([, n]) => n);
}

export interface ExtGeometry {
  readonly blockSize: number;
  readonly blocksCount: number;
  readonly freeBlocks: number;
  readonly firstDataBlock: number;
  readonly blocksPerGroup: number;
  readonly inodesPerGroup: number;
  readonly inodesCount: number;
  readonly freeInodes: number;
  readonly groupCount: number;
  readonly inodeSize: number;
  readonly descSize: number;
  readonly firstMetaBg: number;
  readonly compat: number;
  readonly incompat: number;
  readonly roCompat: number;
  readonly backupBgs: readonly [number, number];
  readonly label: string;
  readonly uuid: string;
  readonly type: 'ext2' | 'ext3' | 'ext4';
  readonly features: readonly string[];
  readonly warnings: readonly FsWarning[];
}

function uuidText(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** the feature bits that make blkid call a filesystem ext4 rather than ext3 */
const EXT3_INCOMPAT = 0x2 | 0x4 | 0x10;
const EXT3_RO_COMPAT = 0x1 | 0x2 | 0x4;

const bad = (field: string, message: string, expected?: unknown, found?: unknown) =>
  new DiskError('CORRUPT', message, { struct: 'ext superblock', field, expected, found });

/** The superblock of the filesystem in `raw` (the 1024 bytes at SUPERBLOCK_OFFSET), checked against a source of `capacity` bytes. */
export function parseSuperblock(raw: Buffer, capacity: number): ExtGeometry {
  const sb = Superblock.decode(raw, 0);
  const warnings: FsWarning[] = [];

  if (sb.revLevel > 1) throw new DiskError('UNSUPPORTEDDISKVERSION', 'unknown ext revision', { struct: 'ext superblock', field: 's_rev_level', expected: '0 or 1', found: sb.revLevel });
  const unknownIncompat = sb.featureIncompat & ~READABLE_INCOMPAT;
  if (unknownIncompat !== 0) {
    const known = names(INCOMPAT, unknownIncompat);
    let rest = unknownIncompat;
    for (const [b] of INCOMPAT) rest &= ~b;
    const all = [...known, ...(rest ? [`unknown 0x${(rest >>> 0).toString(16)}`] : [])];
    throw new DiskError('UNSUPPORTEDFEATURE', `ext feature${all.length > 1 ? 's' : ''} ${all.join(', ')} cannot be read by vdkit`, {
      struct: 'ext superblock',
      field: 's_feature_incompat',
      found: all,
    });
  }

  if (sb.logBlockSize > 6) throw bad('s_log_block_size', 'block size out of range', '0..6 (1 KiB..64 KiB)', sb.logBlockSize);
  const blockSize = 1024 << sb.logBlockSize;
  const is64 = (sb.featureIncompat & INCOMPAT_64BIT) !== 0;
  const blocksCount = sb.blocksCountLo + (is64 ? sb.blocksCountHi * 2 ** 32 : 0);
  const freeBlocks = sb.freeBlocksCountLo + (is64 ? sb.freeBlocksCountHi * 2 ** 32 : 0);
  if (blocksCount === 0) throw bad('s_blocks_count', 'no blocks', '> 0', 0);
  if (blocksCount * blockSize > capacity) {
    throw bad('s_blocks_count', `the filesystem would be ${blocksCount * blockSize} bytes, larger than the ${capacity} bytes that hold it`, `<= ${Math.floor(capacity / blockSize)}`, blocksCount);
  }
  if (sb.firstDataBlock >= blocksCount || sb.firstDataBlock > 1) throw bad('s_first_data_block', 'first data block out of range', blockSize === 1024 ? 1 : 0, sb.firstDataBlock);
  if (sb.blocksPerGroup === 0 || sb.blocksPerGroup > 8 * blockSize) throw bad('s_blocks_per_group', 'blocks per group out of range', `1..${8 * blockSize}`, sb.blocksPerGroup);
  if (sb.inodesPerGroup === 0 || sb.inodesPerGroup > 8 * blockSize) throw bad('s_inodes_per_group', 'inodes per group out of range', `1..${8 * blockSize}`, sb.inodesPerGroup);
  const groupCount = Math.ceil((blocksCount - sb.firstDataBlock) / sb.blocksPerGroup);
  if (sb.inodesCount === 0 || sb.inodesCount > sb.inodesPerGroup * groupCount) {
    throw bad('s_inodes_count', 'inode count does not fit the groups', `1..${sb.inodesPerGroup * groupCount}`, sb.inodesCount);
  }
  const inodeSize = sb.revLevel === 0 ? 128 : sb.inodeSize;
  if (inodeSize < 128 || inodeSize > blockSize || (inodeSize & (inodeSize - 1)) !== 0) {
    throw bad('s_inode_size', 'inode size must be a power of two from 128 to the block size', `128..${blockSize}`, inodeSize);
  }
  const descSize = is64 ? sb.descSize : 32;
  if (is64 && (descSize < 64 || descSize > 1024 || (descSize & (descSize - 1)) !== 0)) {
    throw bad('s_desc_size', 'descriptor size of a 64bit filesystem must be a power of two from 64 to 1024', '64..1024', descSize);
  }

  if (sb.featureIncompat & INCOMPAT_RECOVER) {
    warnings.push({ field: 's_feature_incompat', text: 'the journal needs recovery (needs_recovery): vdkit does not replay it, so recently written data and metadata may be stale' });
  } else if ((sb.state & 1) === 0) {
    warnings.push({ field: 's_state', text: 'the filesystem was not cleanly unmounted: some files may be stale' });
  }
  if (sb.state & 2) warnings.push({ field: 's_state', text: 'the kernel recorded errors on this filesystem (run e2fsck)' });

  const type = (sb.featureIncompat & ~EXT3_INCOMPAT) !== 0 || (sb.featureRoCompat & ~EXT3_RO_COMPAT) !== 0 ? 'ext4' : sb.featureCompat & COMPAT_HAS_JOURNAL ? 'ext3' : 'ext2';
  const nul = sb.volumeName.indexOf(0);
  return {
    blockSize,
    blocksCount,
    freeBlocks,
    firstDataBlock: sb.firstDataBlock,
    blocksPerGroup: sb.blocksPerGroup,
    inodesPerGroup: sb.inodesPerGroup,
    inodesCount: sb.inodesCount,
    freeInodes: sb.freeInodesCount,
    groupCount,
    inodeSize,
    descSize,
    firstMetaBg: sb.firstMetaBg,
    compat: sb.featureCompat,
    incompat: sb.featureIncompat,
    roCompat: sb.featureRoCompat,
    backupBgs: [sb.backupBgs0, sb.backupBgs1],
    label: sb.volumeName.subarray(0, nul < 0 ? 16 : nul).toString('utf8'),
    uuid: uuidText(sb.uuid),
    type,
    features: [...names(COMPAT, sb.featureCompat), ...names(INCOMPAT, sb.featureIncompat), ...names(RO_COMPAT, sb.featureRoCompat)],
    warnings,
  };
}

/** where the superblock is and how long */
export const SUPERBLOCK_RANGE = { offset: SUPERBLOCK_OFFSET, length: Superblock.size } as const;

/** whether block group `g` holds a superblock backup (and so, without meta_bg, a descriptor copy) */
export function groupHasSuper(geo: ExtGeometry, g: number): boolean {
  if (g === 0) return true;
  if (geo.compat & COMPAT_SPARSE_SUPER2) return g === geo.backupBgs[0] || g === geo.backupBgs[1];
  if (g <= 1 || !(geo.roCompat & RO_COMPAT_SPARSE_SUPER)) return true;
  if (!(g & 1)) return false;
  for (const base of [3, 5, 7]) {
    let p = base;
    while (p < g) p *= base;
    if (p === g) return true;
  }
  return false;
}
