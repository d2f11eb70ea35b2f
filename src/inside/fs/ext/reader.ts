/**
 * The ext2/3/4 reader (see NOTES.md): inodes by number over an FsSource, for path.ts to walk.
 *
 * Memory is bounded whatever the metadata says: metadata blocks, decoded inodes and directory
 * listings sit in small LRU caches with fixed budgets; one read returns at most MAX_READ bytes;
 * a directory may hold at most MAX_DIR_BYTES and MAX_DIR_ENTRIES; a symlink target at most one
 * block. Every block number is checked against the filesystem's size before it is read.
 */
import { DiskError } from '../../../core/errors.js';
import type { FsDirEntry, FsSource, FsStat, FsStatfs, InodeReader } from '../types.js';
import { parseDirBlock, type DirParseContext } from './dir.js';
import { decodeInode, FL_EXTENTS, FL_INLINE_DATA, inodeXattr, type ExtInode } from './inode.js';
import { mapBlocks, mapExtents, maxFileBlocks, type BlockAccess, type Run } from './map.js';
import { GroupDesc, SUPERBLOCK_OFFSET, Superblock } from './structs.js';
import { groupHasSuper, INCOMPAT_64BIT, INCOMPAT_FILETYPE, INCOMPAT_META_BG, parseSuperblock, type ExtGeometry } from './superblock.js';
import { Lru } from '../lru.js';

/** bytes one readIno call may return */
export const MAX_READ = 64 * 1024 * 1024;
/** a directory larger than this is refused (the largest real ones are a few hundred MiB with large_dir) */
export const MAX_DIR_BYTES = 256 * 1024 * 1024;
export const MAX_DIR_ENTRIES = 4_000_000;
/** byte budgets of the caches */
const BLOCK_CACHE_BYTES = 8 * 1024 * 1024;
const INODE_CACHE_COUNT = 4096;
const DIR_CACHE_ENTRIES = 1_000_000;
const ROOT_INO = 2;

export interface ExtOpenOptions {
  /** a name for error messages (the image and partition) */
  name?: string;
}

export class ExtReader implements InodeReader, BlockAccess {
  readonly rootIno = ROOT_INO;
  readonly blockSize: number;
  readonly blocksCount: number;
  private readonly blocks = new Lru<number, Buffer>(BLOCK_CACHE_BYTES);
  private readonly inodes = new Lru<number, ExtInode>(INODE_CACHE_COUNT);
  private readonly dirs = new Lru<number, Map<string, number>>(DIR_CACHE_ENTRIES);

  private constructor(
    private readonly source: FsSource,
    readonly geo: ExtGeometry,
    readonly name: string | undefined,
  ) {
    this.blockSize = geo.blockSize;
    this.blocksCount = geo.blocksCount;
  }

  static async open(source: FsSource, opts: ExtOpenOptions = {}): Promise<ExtReader> {
    if (source.capacity < SUPERBLOCK_OFFSET + Superblock.size) {
      throw new DiskError('INVALIDDISK', 'too small to hold an ext superblock', { path: opts.name, struct: 'ext superblock', expected: `>= ${SUPERBLOCK_OFFSET + Superblock.size} bytes`, found: source.capacity });
    }
    const raw = await source.read(SUPERBLOCK_OFFSET, Superblock.size);
    let geo: ExtGeometry;
    try {
      geo = parseSuperblock(raw, source.capacity);
    } catch (err) {
      if (err instanceof DiskError && opts.name) throw new DiskError(err.code, err.message, { ...err.details, path: opts.name }, { cause: err });
      throw err;
    }
    const reader = new ExtReader(source, geo, opts.name);
    const root = await reader.inode(ROOT_INO);
    if (root.type !== 'dir') throw reader.error('CORRUPT', 'the root inode is not a directory', { struct: 'ext inode', field: 'i_mode', inode: ROOT_INO, found: root.type });
    return reader;
  }

  private error(code: 'CORRUPT' | 'INVAL' | 'NOTSUPPORTED', message: string, details: Record<string, unknown>): DiskError {
    return new DiskError(code, message, { path: this.name, ...details });
  }

  statfs(): FsStatfs {
    const g = this.geo;
    return {
      type: g.type,
      label: g.label,
      uuid: g.uuid,
      blockSize: g.blockSize,
      blocks: g.blocksCount,
      freeBlocks: g.freeBlocks,
      inodes: g.inodesCount,
      freeInodes: g.freeInodes,
      features: g.features,
      warnings: g.warnings,
    };
  }

  async readBlock(block: number, why: { inode: number; field: string }): Promise<Buffer> {
    if (!Number.isSafeInteger(block) || block < 0 || block >= this.blocksCount) {
      throw this.error('CORRUPT', `inode ${why.inode}: block ${block} is outside the filesystem`, { struct: 'ext inode', field: why.field, inode: why.inode, expected: `< ${this.blocksCount}`, found: block });
    }
    const hit = this.blocks.get(block);
    if (hit) return hit;
    const buf = await this.source.read(block * this.blockSize, this.blockSize);
    this.blocks.set(block, buf, buf.length);
    return buf;
  }

  /** the block holding group `g`'s descriptor, and the descriptor's offset in it */
  private descriptorPlace(g: number): { block: number; at: number } {
    const geo = this.geo;
    const perBlock = geo.blockSize / geo.descSize;
    const index = Math.floor(g / perBlock);
    const at = (g % perBlock) * geo.descSize;
    if (geo.incompat & INCOMPAT_META_BG && index >= geo.firstMetaBg) {
      // meta_bg: each run of perBlock groups keeps its one descriptor block in its first group
      const firstGroup = index * perBlock;
      const start = geo.firstDataBlock + firstGroup * geo.blocksPerGroup;
      return { block: start + (groupHasSuper(geo, firstGroup) ? 1 : 0), at };
    }
    return { block: geo.firstDataBlock + 1 + index, at };
  }

  private async inodeTable(g: number): Promise<number> {
    const { block, at } = this.descriptorPlace(g);
    const buf = await this.readBlock(block, { inode: 0, field: `group ${g} descriptor` });
    const d = GroupDesc.decode(this.geo.descSize >= 64 ? buf.subarray(at, at + 64) : Buffer.concat([buf.subarray(at, at + 32), Buffer.alloc(32)]));
    const table = d.inodeTableLo + (this.geo.incompat & INCOMPAT_64BIT ? d.inodeTableHi * 2 ** 32 : 0);
    const tableBlocks = Math.ceil((this.geo.inodesPerGroup * this.geo.inodeSize) / this.geo.blockSize);
    if (table === 0 || table + tableBlocks > this.blocksCount) {
      throw this.error('CORRUPT', `group ${g}: inode table outside the filesystem`, { struct: 'ext group descriptor', field: 'bg_inode_table', group: g, expected: `1..${this.blocksCount - tableBlocks}`, found: table });
    }
    return table;
  }

  async inode(ino: number): Promise<ExtInode> {
    if (!Number.isSafeInteger(ino) || ino < 1 || ino > this.geo.inodesCount) {
      throw this.error('INVAL', `inode ${ino} does not exist`, { struct: 'ext inode', expected: `1..${this.geo.inodesCount}`, found: ino });
    }
    const hit = this.inodes.get(ino);
    if (hit) return hit;
    const g = Math.floor((ino - 1) / this.geo.inodesPerGroup);
    const index = (ino - 1) % this.geo.inodesPerGroup;
    const byte = index * this.geo.inodeSize;
    const table = await this.inodeTable(g);
    const blk = await this.readBlock(table + Math.floor(byte / this.blockSize), { inode: ino, field: 'bg_inode_table' });
    const within = byte % this.blockSize;
    const inode = decodeInode(blk.subarray(within, within + this.geo.inodeSize), ino, this.geo, this.name);
    const extents = (inode.flags & FL_EXTENTS) !== 0;
    const limit = maxFileBlocks(extents, this.blockSize) * this.blockSize;
    if (!Number.isSafeInteger(inode.size) || inode.size > limit) {
      throw this.error('CORRUPT', `inode ${ino}: size larger than the filesystem can address`, { struct: 'ext inode', field: 'i_size', inode: ino, expected: `<= ${limit}`, found: inode.size });
    }
    this.inodes.set(ino, inode);
    return inode;
  }

  async statIno(ino: number): Promise<FsStat> {
    const n = await this.inode(ino);
    let rdev: FsStat['rdev'];
    if (n.type === 'chardev' || n.type === 'blockdev') {
      // old encoding in i_block[0] (8-bit major/minor), new in i_block[1] (Linux new_encode_dev)
      const old = n.block.readUInt32LE(0);
      const dev = old !== 0 ? old : n.block.readUInt32LE(4);
      rdev = old !== 0 ? { major: (dev >> 8) & 0xff, minor: dev & 0xff } : { major: (dev & 0xfff00) >> 8, minor: (dev & 0xff) | ((dev >> 12) & 0xfff00) };
    }
    return {
      ino,
      type: n.type,
      mode: n.mode,
      uid: n.uid,
      gid: n.gid,
      size: n.size,
      nlink: n.nlink,
      allocated: n.sectors * 512,
      atime: n.atime,
      mtime: n.mtime,
      ctime: n.ctime,
      ...(n.crtime ? { crtime: n.crtime } : {}),
      ...(rdev ? { rdev } : {}),
    };
  }

  /** the file's bytes [0, size) when kept in the inode (INLINE_DATA): i_block, then system.data */
  private inlineData(n: ExtInode): Buffer {
    const tail = inodeXattr(n, 'data', this.name) ?? Buffer.alloc(0);
    const data = Buffer.concat([n.block, tail]);
    if (n.size > data.length) {
      throw this.error('CORRUPT', `inode ${n.ino}: inline data shorter than the file`, { struct: 'ext inode', field: 'i_size', inode: n.ino, expected: `<= ${data.length}`, found: n.size });
    }
    return data;
  }

  private runs(n: ExtInode, first: number, count: number): Promise<Run[]> {
    return n.flags & FL_EXTENTS ? mapExtents(this, n.ino, n.block, first, count) : mapBlocks(this, n.ino, n.block, first, count);
  }

  async readIno(ino: number, offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw this.error('INVAL', 'offset and length must be non-negative integers', { offset, length });
    }
    if (length > MAX_READ) throw this.error('INVAL', `one read may return at most ${MAX_READ} bytes`, { field: 'length', expected: `<= ${MAX_READ}`, found: length });
    const n = await this.inode(ino);
    if (n.type === 'dir') throw this.error('INVAL', `inode ${ino} is a directory`, { inode: ino });
    const end = Math.min(n.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    if (n.flags & FL_INLINE_DATA) return Buffer.from(this.inlineData(n).subarray(offset, end));
    return this.readMapped(n, offset, end);
  }

  /** bytes [offset, end) of a block-mapped file; holes and uninitialized extents are zeros */
  private async readMapped(n: ExtInode, offset: number, end: number): Promise<Buffer> {
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.ceil(end / bs);
    const out = Buffer.alloc(end - offset);
    for (const r of await this.runs(n, first, last - first)) {
      if (r.physical === 0 || r.uninit) continue;
      const from = Math.max(r.logical, first);
      const to = Math.min(r.logical + r.count, last);
      if (from >= to) continue;
      const fileStart = Math.max(from * bs, offset);
      const fileEnd = Math.min(to * bs, end);
      const disk = (r.physical + (from - r.logical)) * bs + (fileStart - from * bs);
      const data = await this.source.read(disk, fileEnd - fileStart);
      data.copy(out, fileStart - offset);
    }
    return out;
  }

  async readlinkIno(ino: number): Promise<string> {
    const n = await this.inode(ino);
    if (n.type !== 'symlink') throw this.error('INVAL', `inode ${ino} is not a symbolic link`, { inode: ino, found: n.type });
    if (n.size > this.blockSize || n.size > 4096) {
      throw this.error('CORRUPT', `inode ${ino}: symbolic link target too long`, { struct: 'ext inode', field: 'i_size', inode: ino, expected: `<= ${Math.min(4096, this.blockSize)}`, found: n.size });
    }
    let raw: Buffer;
    if (n.flags & FL_INLINE_DATA) raw = this.inlineData(n).subarray(0, n.size);
    else {
      // fast symlinks keep the target in i_block and own no blocks but an xattr block
      const aclSectors = n.fileAcl !== 0 ? this.blockSize / 512 : 0;
      const fast = !(n.flags & FL_EXTENTS) && n.sectors - aclSectors === 0;
      if (fast) {
        if (n.size > n.block.length) throw this.error('CORRUPT', `inode ${ino}: fast symlink longer than i_block`, { struct: 'ext inode', field: 'i_size', inode: ino, expected: `<= ${n.block.length}`, found: n.size });
        raw = n.block.subarray(0, n.size);
      } else raw = await this.readMapped(n, 0, n.size);
    }
    return raw.toString('utf8');
  }

  async readdirIno(ino: number): Promise<FsDirEntry[]> {
    const n = await this.inode(ino);
    if (n.type !== 'dir') throw this.error('INVAL', `inode ${ino} is not a directory`, { inode: ino, found: n.type });
    const ctx = (where: string): DirParseContext => ({ path: this.name, inode: ino, where, blockSize: this.blockSize, filetype: (this.geo.incompat & INCOMPAT_FILETYPE) !== 0, inodesCount: this.geo.inodesCount });
    const out: FsDirEntry[] = [];
    if (n.flags & FL_INLINE_DATA) {
      // i_block: the parent's inode number (4 bytes), then entries; system.data: more entries
      parseDirBlock(n.block.subarray(4), ctx('inline'), out);
      const tail = inodeXattr(n, 'data', this.name);
      if (tail && tail.length > 0) parseDirBlock(tail, ctx('inline system.data'), out);
    } else {
      if (n.size > MAX_DIR_BYTES || n.size % this.blockSize !== 0) {
        throw this.error('CORRUPT', `directory inode ${ino}: size out of range`, { struct: 'ext inode', field: 'i_size', inode: ino, expected: `a multiple of ${this.blockSize} up to ${MAX_DIR_BYTES}`, found: n.size });
      }
      const blocks = n.size / this.blockSize;
      // a window of blocks at a time keeps the mapping and the reads bounded
      const window = 256;
      for (let b = 0; b < blocks; b += window) {
        const count = Math.min(window, blocks - b);
        for (const r of await this.runs(n, b, count)) {
          if (r.physical === 0 || r.uninit) continue;
          const from = Math.max(r.logical, b);
          const to = Math.min(r.logical + r.count, b + count);
          for (let l = from; l < to; l++) {
            parseDirBlock(await this.readBlock(r.physical + (l - r.logical), { inode: ino, field: 'directory block' }), ctx(String(l)), out);
            if (out.length > MAX_DIR_ENTRIES) {
              throw this.error('CORRUPT', `directory inode ${ino}: more than ${MAX_DIR_ENTRIES} entries`, { struct: 'ext inode', field: 'i_size', inode: ino, expected: `<= ${MAX_DIR_ENTRIES}`, found: out.length });
            }
          }
        }
      }
    }
    // no filetype feature (old ext2), or an entry that left it 0: the inode says
    for (let i = 0; i < out.length; i++) if (out[i]!.type === 'unknown') out[i] = { ...out[i]!, type: (await this.inode(out[i]!.ino)).type };
    return out;
  }

  async lookupIno(dirIno: number, name: string): Promise<number | undefined> {
    let names = this.dirs.get(dirIno);
    if (!names) {
      const entries = await this.readdirIno(dirIno);
      names = new Map(entries.map((e) => [e.name, e.ino]));
      this.dirs.set(dirIno, names, Math.max(1, names.size));
    }
    return names.get(name);
  }
}
