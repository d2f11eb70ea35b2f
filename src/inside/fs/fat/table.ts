/**
 * The file allocation table: cluster chains as runs of consecutive clusters. The FAT is read in
 * CHUNK-sized pieces through a small LRU, never whole (a FAT32 FAT can be a GiB). Every walk is
 * bounded by the caller's cluster budget (a file's size, a directory's 2 MiB limit, the volume's
 * cluster count), and a chain that comes back to a cluster it already used shows as two
 * overlapping runs, checked once the walk ends: a loop is an error, never a hang.
 */
import { DiskError } from '../../../core/errors.js';
import type { FsSource } from '../types.js';
import type { FatGeometry } from './boot.js';
import { Lru } from '../lru.js';

const CHUNK = 64 * 1024;
const FAT_CACHE_BYTES = 4 * 1024 * 1024;
/** free clusters are counted at open only when the FAT is at most this long */
export const COUNT_FREE_MAX_FAT = 16 * 1024 * 1024;

/** consecutive clusters [start, start + count) */
export interface Run {
  readonly start: number;
  readonly count: number;
}

export interface ChainWhy {
  /** what the chain belongs to, for messages ("inode 12345", "the root directory") */
  readonly what: string;
  /** the field that named the first cluster */
  readonly field: string;
}

export class FatTable {
  private readonly chunks = new Lru<number, Buffer>(FAT_CACHE_BYTES);
  private readonly base: number;
  /** values at or above this end a chain; `bad` marks a bad cluster */
  private readonly eoc: number;
  private readonly bad: number;

  constructor(
    private readonly source: FsSource,
    private readonly geo: FatGeometry,
    private readonly name: string | undefined,
  ) {
    this.base = geo.fatStart + geo.activeFat * geo.fatBytes;
    const width = geo.type === 'FAT12' ? 0xfff : geo.type === 'FAT16' ? 0xffff : 0x0fffffff;
    this.eoc = width - 7;
    this.bad = width - 8;
  }

  get lastCluster(): number {
    return this.geo.clusters + 1;
  }

  private async byte(at: number): Promise<number> {
    const key = Math.floor(at / CHUNK);
    let c = this.chunks.get(key);
    if (!c) {
      const from = key * CHUNK;
      c = await this.source.read(this.base + from, Math.min(CHUNK, this.geo.fatBytes - from));
      this.chunks.set(key, c, c.length);
    }
    return c[at - key * CHUNK]!;
  }

  /** FAT[n] as stored (FAT32: the low 28 bits) */
  async entry(n: number): Promise<number> {
    switch (this.geo.type) {
      case 'FAT12': {
        const at = n + (n >> 1);
        const v = (await this.byte(at)) | ((await this.byte(at + 1)) << 8);
        return n & 1 ? v >> 4 : v & 0xfff;
      }
      case 'FAT16':
        return (await this.byte(2 * n)) | ((await this.byte(2 * n + 1)) << 8);
      default: {
        const at = 4 * n;
        const v = (await this.byte(at)) | ((await this.byte(at + 1)) << 8) | ((await this.byte(at + 2)) << 16) | ((await this.byte(at + 3)) << 24);
        return (v >>> 0) & 0x0fffffff;
      }
    }
  }

  private corrupt(message: string, field: string, expected: unknown, found: unknown): DiskError {
    return new DiskError('CORRUPT', message, { path: this.name, struct: 'FAT', field, expected, found });
  }

  /**
   * The chain from `first` as runs. `need` clusters exactly when `exact` (a file of known size:
   * an earlier end is an error, what follows is not read); otherwise up to the end of the chain,
   * and more than `need` clusters is an error (a directory over its limit, or a loop).
   */
  async chain(first: number, need: number, exact: boolean, why: ChainWhy): Promise<Run[]> {
    const last = this.lastCluster;
    if (first < 2 || first > last) throw this.corrupt(`${why.what}: first cluster ${first} is outside the data area`, why.field, `2..${last}`, first);
    const runs: { start: number; count: number }[] = [];
    let cur = first;
    let n = 0;
    for (;;) {
      const top = runs[runs.length - 1];
      if (top && top.start + top.count === cur) top.count++;
      else runs.push({ start: cur, count: 1 });
      n++;
      if (exact && n === need) break;
      const next = await this.entry(cur);
      if (next >= this.eoc) {
        if (exact) throw this.corrupt(`${why.what}: cluster chain ends after ${n} of the ${need} clusters its size needs`, `FAT[${cur}]`, 'a next cluster', 'end of chain');
        break;
      }
      if (next === 0 || next === this.bad || next < 2 || next > last) {
        const what = next === 0 ? 'a free cluster' : next === this.bad ? 'a bad cluster' : `cluster ${next}, outside the data area`;
        throw this.corrupt(`${why.what}: cluster chain runs into ${what}`, `FAT[${cur}]`, `2..${last} or end of chain`, next);
      }
      if (n >= need) {
        checkNoLoop(runs, (cluster) => this.loop(why, cluster));
        throw this.corrupt(`${why.what}: cluster chain longer than ${need} clusters (a loop, or a directory over its limit)`, `FAT[${cur}]`, `<= ${need} clusters`, 'more');
      }
      cur = next;
    }
    checkNoLoop(runs, (cluster) => this.loop(why, cluster));
    return runs;
  }

  private loop(why: ChainWhy, cluster: number): DiskError {
    return this.corrupt(`${why.what}: cluster chain loops (cluster ${cluster} is used twice)`, `FAT[${cluster}]`, 'each cluster once', 'a loop');
  }

  /** free clusters, reading the whole FAT in CHUNK pieces (the caller bounds its length) */
  async countFree(): Promise<number> {
    let free = 0;
    const last = this.lastCluster;
    const perChunk = this.geo.type === 'FAT12' ? 0 : CHUNK / (this.geo.type === 'FAT16' ? 2 : 4);
    if (perChunk === 0) {
      for (let n = 2; n <= last; n++) if ((await this.entry(n)) === 0) free++;
      return free;
    }
    const width = this.geo.type === 'FAT16' ? 2 : 4;
    for (let first = 0; first <= last; first += perChunk) {
      const bytes = Math.min(CHUNK, (last + 1 - first) * width);
      const c = await this.source.read(this.base + first * width, bytes);
      for (let i = 0; i < bytes; i += width) {
        const n = first + i / width;
        if (n < 2) continue;
        const v = width === 2 ? c.readUInt16LE(i) : c.readUInt32LE(i) & 0x0fffffff;
        if (v === 0) free++;
      }
    }
    return free;
  }
}

/** a cluster that two runs share, sorted by start (a chain that loops), reported through `error` */
function checkNoLoop(runs: readonly Run[], error: (cluster: number) => DiskError): void {
  if (runs.length < 2) return;
  const sorted = [...runs].sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    if (prev.start + prev.count > sorted[i]!.start) throw error(sorted[i]!.start);
  }
}
