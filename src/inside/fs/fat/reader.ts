/**
 * The FAT12/16/32 reader (see NOTES.md): directory entries by number over an FsSource, for
 * path.ts to walk. FAT has no inodes, so a file's number is the byte offset of its short
 * directory entry in the volume (stable for as long as the file is not moved; never 0 or 1,
 * since the boot sector comes first); the root directory, which has no entry, is number 1.
 *
 * Memory is bounded whatever the metadata says: FAT pieces, decoded entries, directory name
 * maps and cluster chains sit in LRU caches with fixed budgets; a directory is at most 2 MiB
 * (the spec's 65536 entries); one read returns at most MAX_READ bytes.
 */
import { DiskError } from '../../../core/errors.js';
import type { FileType, FsDirEntry, FsSource, FsStat, FsStatfs, FsWarning, InodeReader } from '../types.js';
import { parseBoot, type FatGeometry } from './boot.js';
import { decodeShort, MAX_DIR_BYTES, parseDir, type FatEntry } from './dir.js';
import { Lru } from '../lru.js';
import { ATTR_DIRECTORY, ATTR_LONG_NAME, ATTR_READ_ONLY, ATTR_VOLUME_ID, DELETED, ENTRY_SIZE } from './structs.js';
import { COUNT_FREE_MAX_FAT, FatTable, type Run } from './table.js';

export const MAX_READ = 64 * 1024 * 1024;
export const ROOT_INO = 1;
const ENTRY_CACHE_COUNT = 65536;
const DIR_CACHE_ENTRIES = 1_000_000;
const CHAIN_CACHE_RUNS = 1_000_000;
const EPOCH = { sec: 0, nsec: 0 };

export interface FatOpenOptions {
  /** a name for error messages (the image and partition) */
  name?: string;
}

interface Names {
  readonly exact: Map<string, number>;
  /** upper-cased long and short names: FAT looks names up without regard to case */
  readonly folded: Map<string, number>;
}

export class FatReader implements InodeReader {
  readonly rootIno = ROOT_INO;
  private readonly table: FatTable;
  private readonly entries = new Lru<number, FatEntry>(ENTRY_CACHE_COUNT);
  private readonly names = new Lru<number, Names>(DIR_CACHE_ENTRIES);
  private readonly chains = new Lru<number, Run[]>(CHAIN_CACHE_RUNS);
  private label = '';
  private freeClusters = 0;

  private constructor(
    private readonly source: FsSource,
    readonly geo: FatGeometry,
    readonly name: string | undefined,
  ) {
    this.table = new FatTable(source, geo, name);
  }

  static async open(source: FsSource, opts: FatOpenOptions = {}): Promise<FatReader> {
    if (source.capacity < 512) throw new DiskError('INVALIDDISK', 'too small to hold a FAT boot sector', { path: opts.name, struct: 'FAT BPB', expected: '>= 512 bytes', found: source.capacity });
    const geo = parseBoot(await source.read(0, 512), source.capacity, opts.name);
    const r = new FatReader(source, geo, opts.name);
    const root = await r.readDir(ROOT_INO);
    r.label = root.label ?? geo.bootLabel;
    if (r.label === 'NO NAME') r.label = '';
    if (geo.fatBytes <= COUNT_FREE_MAX_FAT) r.freeClusters = await r.table.countFree();
    else geo.warnings.push({ field: 'BPB_FATSz32', text: `free clusters not counted (a FAT of ${geo.fatBytes} bytes); statfs reports 0` });
    await r.checkClean();
    return r;
  }

  /** FAT[1]'s clean-shutdown and hard-error bits (FAT16: 0x8000, 0x4000; FAT32: 0x08000000, 0x04000000) */
  private async checkClean(): Promise<void> {
    if (this.geo.type === 'FAT12') return;
    const v = await this.table.entry(1);
    const shift = this.geo.type === 'FAT16' ? 0 : 12;
    const w: FsWarning[] = this.geo.warnings;
    if (!(v & (0x8000 << shift))) w.push({ field: 'FAT[1]', text: 'the volume was not unmounted cleanly (FAT[1] clean-shutdown bit is 0): recent changes may be incomplete' });
    if (!(v & (0x4000 << shift))) w.push({ field: 'FAT[1]', text: 'the volume recorded a disk I/O error (FAT[1] hard-error bit is 0)' });
  }

  private error(code: 'CORRUPT' | 'INVAL', message: string, details: Record<string, unknown>): DiskError {
    return new DiskError(code, message, { path: this.name, ...details });
  }

  statfs(): FsStatfs {
    const g = this.geo;
    return {
      type: 'vfat',
      label: this.label,
      uuid: g.serial,
      blockSize: g.clusterSize,
      blocks: g.clusters,
      freeBlocks: this.freeClusters,
      inodes: 0,
      freeInodes: 0,
      features: [g.type],
      warnings: g.warnings,
    };
  }

  private inData(ino: number): boolean {
    const g = this.geo;
    if (g.rootBytes > 0 && ino >= g.rootStart && ino < g.rootStart + g.rootBytes) return true;
    return ino >= g.dataStart && ino < g.dataStart + g.clusters * g.clusterSize;
  }

  /** the directory entry whose number is `ino` (its byte offset), read again if not cached */
  async entry(ino: number): Promise<FatEntry> {
    const hit = this.entries.get(ino);
    if (hit) return hit;
    if (!Number.isSafeInteger(ino) || ino % ENTRY_SIZE !== 0 || !this.inData(ino)) {
      throw this.error('INVAL', `inode ${ino} does not exist (FAT inode numbers are directory entry offsets)`, { struct: 'FAT directory entry', found: ino });
    }
    const buf = await this.source.read(ino, ENTRY_SIZE);
    const attr = buf[11]!;
    if (buf[0] === 0 || buf[0] === DELETED || (attr & 0x3f) === ATTR_LONG_NAME || (attr & (ATTR_VOLUME_ID | ATTR_DIRECTORY)) === ATTR_VOLUME_ID) {
      throw this.error('INVAL', `inode ${ino} is not a file's directory entry`, { struct: 'FAT directory entry', found: ino });
    }
    const e = decodeShort(buf, 0, ino, this.geo.type === 'FAT32');
    this.entries.set(ino, e);
    return e;
  }

  private typeOf(e: FatEntry): FileType {
    return e.attr & ATTR_DIRECTORY ? 'dir' : 'file';
  }

  /** the clusters of a directory (a chain to its end, at most 2 MiB) or of a file (exactly its size) */
  private async runs(ino: number, e: FatEntry | undefined): Promise<Run[]> {
    const hit = this.chains.get(ino);
    if (hit) return hit;
    const g = this.geo;
    const dir = !e || (e.attr & ATTR_DIRECTORY) !== 0;
    const first = e ? e.firstCluster : g.rootCluster;
    const what = e ? `inode ${ino} (${e.name})` : 'the root directory';
    let runs: Run[];
    if (dir) {
      if (first === 0) throw this.error('CORRUPT', `${what}: a directory with no first cluster`, { struct: 'FAT directory entry', field: 'DIR_FstClusLO', inode: ino, expected: `2..${g.clusters + 1}`, found: 0 });
      const limit = Math.min(g.clusters, Math.ceil(MAX_DIR_BYTES / g.clusterSize));
      runs = await this.table.chain(first, limit, false, { what, field: e ? 'DIR_FstClusLO' : 'BPB_RootClus' });
    } else {
      const need = Math.ceil(e.size / g.clusterSize);
      if (need === 0) runs = [];
      else {
        if (need > g.clusters) throw this.error('CORRUPT', `${what}: file larger than the volume`, { struct: 'FAT directory entry', field: 'DIR_FileSize', inode: ino, expected: `<= ${g.clusters * g.clusterSize}`, found: e.size });
        if (e.firstCluster === 0) throw this.error('CORRUPT', `${what}: ${e.size} bytes but no first cluster`, { struct: 'FAT directory entry', field: 'DIR_FstClusLO', inode: ino, expected: `2..${g.clusters + 1}`, found: 0 });
        runs = await this.table.chain(e.firstCluster, need, true, { what, field: 'DIR_FstClusLO' });
      }
    }
    this.chains.set(ino, runs, Math.max(1, runs.length));
    return runs;
  }

  private clusterAt(cluster: number): number {
    return this.geo.dataStart + (cluster - 2) * this.geo.clusterSize;
  }

  /** a directory's entries, by reading its area or clusters whole (2 MiB at most) */
  private async readDir(ino: number): Promise<ReturnType<typeof parseDir>> {
    const g = this.geo;
    const fat32 = g.type === 'FAT32';
    if (ino === ROOT_INO && g.rootBytes > 0) {
      const buf = await this.source.read(g.rootStart, g.rootBytes);
      return parseDir(buf, (i) => g.rootStart + i, fat32);
    }
    const e = ino === ROOT_INO ? undefined : await this.entry(ino);
    if (e && !(e.attr & ATTR_DIRECTORY)) throw this.error('INVAL', `inode ${ino} is not a directory`, { inode: ino, found: 'file' });
    const runs = await this.runs(ino, e);
    const parts: Buffer[] = [];
    for (const r of runs) parts.push(await this.source.read(this.clusterAt(r.start), r.count * g.clusterSize));
    // byte i of the directory is in run k where starts[k] <= i < starts[k + 1]
    const starts: number[] = [];
    let total = 0;
    for (const r of runs) {
      starts.push(total);
      total += r.count * g.clusterSize;
    }
    const inoAt = (i: number): number => {
      let lo = 0;
      let hi = starts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (starts[mid]! <= i) lo = mid;
        else hi = mid - 1;
      }
      return this.clusterAt(runs[lo]!.start) + (i - starts[lo]!);
    };
    return parseDir(Buffer.concat(parts, total), inoAt, fat32);
  }

  async statIno(ino: number): Promise<FsStat> {
    const g = this.geo;
    if (ino === ROOT_INO) {
      const size = g.rootBytes > 0 ? g.rootBytes : (await this.runs(ROOT_INO, undefined)).reduce((s, r) => s + r.count, 0) * g.clusterSize;
      return { ino, type: 'dir', mode: 0o755, uid: 0, gid: 0, size, nlink: 2, allocated: size, atime: EPOCH, mtime: EPOCH, ctime: EPOCH };
    }
    const e = await this.entry(ino);
    const type = this.typeOf(e);
    const readOnly = (e.attr & ATTR_READ_ONLY) !== 0;
    let size = e.size;
    let allocated = Math.ceil(e.size / g.clusterSize) * g.clusterSize;
    if (type === 'dir') {
      // a directory's entry says 0 bytes; like Linux, report what its clusters hold
      size = (await this.runs(ino, e)).reduce((s, r) => s + r.count, 0) * g.clusterSize;
      allocated = size;
    }
    return {
      ino,
      type,
      mode: type === 'dir' ? (readOnly ? 0o555 : 0o755) : readOnly ? 0o444 : 0o644,
      uid: 0,
      gid: 0,
      size,
      nlink: type === 'dir' ? 2 : 1,
      allocated,
      atime: e.atime,
      mtime: e.mtime,
      // FAT keeps no change time: Linux's vfat reports the modification time
      ctime: e.mtime,
      crtime: e.crtime,
    };
  }

  async readdirIno(ino: number): Promise<FsDirEntry[]> {
    const { entries } = await this.readDir(ino);
    const out: FsDirEntry[] = [];
    const exact = new Map<string, number>();
    const folded = new Map<string, number>();
    for (const e of entries) {
      this.entries.set(e.ino, e);
      out.push({ name: e.name, ino: e.ino, type: this.typeOf(e) });
      if (!exact.has(e.name)) exact.set(e.name, e.ino);
      for (const n of [e.name, e.shortName]) {
        const f = n.toUpperCase();
        if (!folded.has(f)) folded.set(f, e.ino);
      }
    }
    this.names.set(ino, { exact, folded }, Math.max(1, out.length));
    return out;
  }

  async lookupIno(dirIno: number, name: string): Promise<number | undefined> {
    let names = this.names.get(dirIno);
    if (!names) {
      await this.readdirIno(dirIno);
      names = this.names.get(dirIno);
      if (!names) return undefined;
    }
    return names.exact.get(name) ?? names.folded.get(name.toUpperCase());
  }

  async readIno(ino: number, offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw this.error('INVAL', 'offset and length must be non-negative integers', { offset, length });
    }
    if (length > MAX_READ) throw this.error('INVAL', `one read may return at most ${MAX_READ} bytes`, { field: 'length', expected: `<= ${MAX_READ}`, found: length });
    if (ino === ROOT_INO) throw this.error('INVAL', 'the root is a directory', { inode: ino });
    const e = await this.entry(ino);
    if (e.attr & ATTR_DIRECTORY) throw this.error('INVAL', `inode ${ino} is a directory`, { inode: ino });
    const end = Math.min(e.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    const cs = this.geo.clusterSize;
    const out = Buffer.alloc(end - offset);
    let fileAt = 0;
    for (const r of await this.runs(ino, e)) {
      const runEnd = fileAt + r.count * cs;
      const from = Math.max(fileAt, offset);
      const to = Math.min(runEnd, end);
      if (from < to) (await this.source.read(this.clusterAt(r.start) + (from - fileAt), to - from)).copy(out, from - offset);
      fileAt = runEnd;
      if (fileAt >= end) break;
    }
    return out;
  }

  async readlinkIno(ino: number): Promise<string> {
    throw this.error('INVAL', `inode ${ino} is not a symbolic link (FAT has none)`, { inode: ino });
  }
}
