/**
 * The one small interface every read-only filesystem reader under inside/fs/ provides (ext now;
 * FAT and NTFS later), sized like nbdkit's or FUSE's: a reader answers for inodes (stat, list,
 * read, readlink by inode number) and the shared path code in path.ts turns that into the path
 * API callers use. A reader reads its bytes only through an `FsSource`: a whole Disk, or a
 * partition or logical volume of one (inside/source.ts's ByteSource has the same shape).
 */

/** Random access to the bytes a filesystem lives in: `Disk` satisfies it as it is. */
export interface FsSource {
  /** bytes */
  readonly capacity: number;
  /** exactly `length` bytes at `offset` */
  read(offset: number, length: number): Promise<Buffer>;
}

export type FileType = 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket' | 'unknown';

/** A time as the filesystem stores it: seconds since 1970 (may be negative) and nanoseconds. */
export interface FsTime {
  readonly sec: number;
  readonly nsec: number;
}

export interface FsStat {
  /** the reader's own inode number (ext: i-number; later NTFS: MFT record) */
  readonly ino: number;
  readonly type: FileType;
  /** permission bits with setuid/setgid/sticky (mode & 0o7777) */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** bytes (a symlink: the target's length) */
  readonly size: number;
  readonly nlink: number;
  /** bytes allocated on the filesystem, when the reader knows them */
  readonly allocated?: number;
  readonly atime: FsTime;
  readonly mtime: FsTime;
  readonly ctime: FsTime;
  /** creation time, where the filesystem keeps one (ext4 with 256-byte inodes) */
  readonly crtime?: FsTime;
  /** device number of a character or block device: major and minor */
  readonly rdev?: { readonly major: number; readonly minor: number };
}

export interface FsDirEntry {
  /** as stored: bytes decoded as UTF-8 (bytes that are not UTF-8 become U+FFFD) */
  readonly name: string;
  readonly ino: number;
  /** from the directory entry when the filesystem records it, else from the inode */
  readonly type: FileType;
}

/** Something a reader got past: a journal needing recovery, an odd but readable field. */
export interface FsWarning {
  readonly field?: string;
  readonly text: string;
}

export interface FsStatfs {
  /** `ext2`, `ext3`, `ext4` (later `vfat`, `ntfs`), as blkid names them */
  readonly type: string;
  readonly label: string;
  /** lower-case with dashes, as blkid prints it */
  readonly uuid: string;
  readonly blockSize: number;
  readonly blocks: number;
  readonly freeBlocks: number;
  readonly inodes: number;
  readonly freeInodes: number;
  /** feature names the filesystem declares (ext: the `Filesystem features` line of dumpe2fs) */
  readonly features: readonly string[];
  readonly warnings: readonly FsWarning[];
}

/**
 * What a reader implements: everything by inode number. Readers never resolve paths (path.ts
 * does, once for all of them) and never trust a directory's `..`.
 */
export interface InodeReader {
  readonly rootIno: number;
  statfs(): FsStatfs;
  statIno(ino: number): Promise<FsStat>;
  /** the entries of a directory, without `.` and `..` */
  readdirIno(ino: number): Promise<FsDirEntry[]>;
  /** one name in a directory; undefined when absent */
  lookupIno(dirIno: number, name: string): Promise<number | undefined>;
  /** up to `length` bytes at `offset` (fewer at the end of the file; holes read as zeros) */
  readIno(ino: number, offset: number, length: number): Promise<Buffer>;
  /** a symlink's target, as stored */
  readlinkIno(ino: number): Promise<string>;
}

export interface StatOptions {
  /** follow a symlink in the last component (stat, not lstat); default false */
  follow?: boolean;
}

/** The path API over any reader: paths are '/'-separated from the filesystem's root. */
export interface Filesystem extends InodeReader {
  readdir(path: string): Promise<FsDirEntry[]>;
  /** lstat unless `follow` */
  stat(path: string, opts?: StatOptions): Promise<FsStat>;
  /** follows symlinks */
  read(path: string, offset: number, length: number): Promise<Buffer>;
  readlink(path: string): Promise<string>;
  /** the inode a path names (symlinks followed in every component but, unless `follow`, the last) */
  resolve(path: string, opts?: StatOptions): Promise<number>;
}
