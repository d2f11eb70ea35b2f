/**
 * One ext inode, decoded: the 128-byte base (ext2), the extra fields of larger inodes as far as
 * i_extra_isize reaches (nanosecond and post-2038 times, creation time), and the in-inode
 * extended attributes that inline data keeps its tail in (system.data).
 */
import { DiskError } from '../../../core/errors.js';
import type { FileType, FsTime } from '../types.js';
import { Inode, InodeExtra, XATTR_MAGIC, XattrEntry } from './structs.js';
import { INCOMPAT_64BIT, RO_COMPAT_HUGE_FILE, type ExtGeometry } from './superblock.js';

export const FL_INDEX = 0x1000;
export const FL_HUGE_FILE = 0x40000;
export const FL_EXTENTS = 0x80000;
export const FL_EA_INODE = 0x200000;
export const FL_INLINE_DATA = 0x10000000;

const TYPE_OF_MODE: Record<number, FileType> = {
  0x1: 'fifo',
  0x2: 'chardev',
  0x4: 'dir',
  0x6: 'blockdev',
  0x8: 'file',
  0xa: 'symlink',
  0xc: 'socket',
};

/** directory-entry file_type values (with the filetype feature) */
export const TYPE_OF_DIRENT: readonly FileType[] = ['unknown', 'file', 'dir', 'chardev', 'blockdev', 'fifo', 'socket', 'symlink'];

export interface ExtInode {
  readonly ino: number;
  readonly type: FileType;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly nlink: number;
  readonly flags: number;
  /** i_block: block pointers, the extent tree root, a fast symlink or inline data */
  readonly block: Buffer;
  /** in 512-byte sectors as stat reports them */
  readonly sectors: number;
  readonly fileAcl: number;
  readonly atime: FsTime;
  readonly mtime: FsTime;
  readonly ctime: FsTime;
  readonly crtime?: FsTime;
  /** the in-inode xattr area (after i_extra_isize), possibly empty */
  readonly xattrArea: Buffer;
}

/** the i-number's own view of a time: a signed 32-bit second count, widened by the extra field */
function time(base: number, extra: number | undefined): FsTime {
  let sec = base | 0;
  if (extra === undefined) return { sec, nsec: 0 };
  // bits 0-1 extend the seconds past 2038 (epoch bits); bits 2-31 are nanoseconds
  sec += (extra & 3) * 2 ** 32;
  return { sec, nsec: extra >>> 2 };
}

export function decodeInode(raw: Buffer, ino: number, geo: ExtGeometry, path?: string): ExtInode {
  const base = Inode.decode(raw, 0);
  const where = { path, struct: 'ext inode', inode: ino };
  let extraIsize = 0;
  let extra: ReturnType<typeof InodeExtra.decode> | undefined;
  if (geo.inodeSize > 128) {
    extraIsize = raw.readUInt16LE(128);
    if (extraIsize > geo.inodeSize - 128 || extraIsize & 3) {
      throw new DiskError('CORRUPT', `inode ${ino}: extra inode size out of range`, { ...where, field: 'i_extra_isize', expected: `<= ${geo.inodeSize - 128}, a multiple of 4`, found: extraIsize });
    }
    const copy = Buffer.alloc(InodeExtra.size);
    raw.copy(copy, 0, 128, 128 + Math.min(extraIsize, InodeExtra.size));
    extra = InodeExtra.decode(copy, 0);
  }
  // an extra field exists only when i_extra_isize covers it (offsets relative to 0x80)
  const has = (end: number) => extra !== undefined && extraIsize >= end;
  const type = TYPE_OF_MODE[base.mode >> 12] ?? 'unknown';
  const size = base.sizeLo + base.sizeHigh * 2 ** 32;
  const huge = (geo.roCompat & RO_COMPAT_HUGE_FILE) !== 0;
  const blockCount = base.blocksLo + (huge ? base.blocksHigh * 2 ** 32 : 0);
  const sectors = huge && base.flags & FL_HUGE_FILE ? blockCount * (geo.blockSize / 512) : blockCount;
  const fileAcl = base.fileAclLo + (geo.incompat & INCOMPAT_64BIT ? base.fileAclHigh * 2 ** 32 : 0);
  const xStart = 128 + extraIsize;
  return {
    ino,
    type,
    mode: base.mode & 0o7777,
    uid: base.uid | (base.uidHigh << 16),
    gid: base.gid | (base.gidHigh << 16),
    size,
    nlink: base.linksCount,
    flags: base.flags,
    block: base.block,
    sectors,
    fileAcl,
    atime: time(base.atime, has(0x10) ? extra!.atimeExtra : undefined),
    mtime: time(base.mtime, has(0x0c) ? extra!.mtimeExtra : undefined),
    ctime: time(base.ctime, has(0x08) ? extra!.ctimeExtra : undefined),
    crtime: has(0x14) ? time(extra!.crtime, has(0x18) ? extra!.crtimeExtra : undefined) : undefined,
    // a copy: a cached inode must not pin the whole metadata block it was read from
    xattrArea: geo.inodeSize > xStart ? Buffer.from(raw.subarray(xStart, geo.inodeSize)) : Buffer.alloc(0),
  };
}

/** xattr name prefixes by e_name_index (the `system.` index 7 holds inline data) */
const XATTR_INDEX_SYSTEM = 7;

/**
 * The value of the in-inode xattr `system.<name>`, or undefined. Every offset is checked
 * against the area, and the walk stops at the area's end, so a damaged list cannot loop.
 */
export function inodeXattr(inode: ExtInode, name: string, path?: string): Buffer | undefined {
  const area = inode.xattrArea;
  if (area.length < 4 || area.readUInt32LE(0) !== XATTR_MAGIC) return undefined;
  const first = 4; // e_value_offs counts from the first entry, right after the magic
  let pos = first;
  const bad = (field: string, found: unknown) =>
    new DiskError('CORRUPT', `inode ${inode.ino}: in-inode extended attribute out of bounds`, { path, struct: 'ext xattr entry', field, inode: inode.ino, found });
  while (pos + 4 <= area.length && area.readUInt32LE(pos) !== 0) {
    if (pos + XattrEntry.size > area.length) throw bad('e_name_len', pos);
    const e = XattrEntry.decode(area, pos);
    const nameEnd = pos + XattrEntry.size + e.nameLen;
    if (nameEnd > area.length) throw bad('e_name_len', e.nameLen);
    const entryName = area.subarray(pos + XattrEntry.size, nameEnd).toString('latin1');
    if (e.nameIndex === XATTR_INDEX_SYSTEM && entryName === name) {
      if (e.valueInum !== 0) throw new DiskError('NOTSUPPORTED', `inode ${inode.ino}: system.${name} kept in another inode`, { path, struct: 'ext xattr entry', field: 'e_value_inum', found: e.valueInum });
      const start = first + e.valueOffs;
      if (start + e.valueSize > area.length) throw bad('e_value_offs', e.valueOffs);
      return area.subarray(start, start + e.valueSize);
    }
    pos = (nameEnd + 3) & ~3;
  }
  return undefined;
}
