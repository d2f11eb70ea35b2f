/**
 * qcow2 refcounts and cluster allocation (qcow2.md §5), modelled on QEMU's qcow2-refcount.c so
 * that a fresh image grows the way QEMU grows it:
 *
 * - `findFree(n)` is QEMU's alloc_clusters_noref: scan from `freeIndex` for n contiguous clusters
 *   of refcount 0 (a missing refcount block means "all 0"); `freeIndex` moves past them.
 * - `alloc(n)` is qcow2_alloc_clusters: find n free clusters, then raise their refcounts. If a
 *   refcount block is missing for one of them, that block is created first (inside the range it
 *   describes when the first free cluster lies there, else described by another block, which may
 *   have to be created too) and the search restarts, because the new block may sit where the
 *   caller's clusters were going to go.
 * - Refcount blocks are written through: when `alloc` resolves, the new refcounts are in the
 *   file, before the caller writes the data or the table entry that will use the clusters. A
 *   crash can therefore only leave clusters whose refcount is too high (leaks), never a table
 *   entry pointing at a cluster of refcount 0.
 * - When the refcount table is full, a larger one is written past the end of everything in use,
 *   together with the refcount blocks that describe it; then the header is switched to it
 *   (`tableMoved`), then the old table's clusters are freed.
 */
import { DiskError } from '../../core/errors.js';
import type { ByteStore } from '../../storage/store.js';
import { MAX_HOST_OFFSET, MAX_REFTABLE_BYTES, getRefcount, maxRefcount, refcountBytes, setRefcount } from './structs.js';

/** refcount blocks kept in memory (they are written through, so dropping one costs a re-read) */
const BLOCK_CACHE_BYTES = 16 * 1024 * 1024;

export interface FileState {
  /** current size of the image file (grows with every write past the end) */
  size: number;
}

/** what is wrong with a refcount table entry (fixed texts: check merges runs of like entries) */
export const BAD_BLOCK_ENTRY = {
  unaligned: 'refcount block offset is not cluster aligned',
  pastEnd: 'refcount block lies past the end of the file',
} as const;

export class Refcounts {
  /** first cluster index the next search starts at (QEMU's free_cluster_index) */
  freeIndex = 0;
  readonly entriesPerBlock: number;
  private readonly cache = new Map<number, Buffer>();
  private readonly cacheLimit: number;
  private readonly max: number;

  constructor(
    private readonly path: string,
    private readonly store: ByteStore,
    readonly clusterBits: number,
    readonly order: number,
    public tableOffset: number,
    public tableClusters: number,
    /** the refcount table, raw big-endian entries */
    private table: Buffer,
    private readonly file: FileState,
    /** write refcount_table_offset and refcount_table_clusters into the header */
    private readonly tableMoved: (offset: number, clusters: number) => Promise<void>,
  ) {
    this.entriesPerBlock = (2 ** clusterBits * 8) / (1 << order);
    this.cacheLimit = Math.max(16, Math.floor(BLOCK_CACHE_BYTES / 2 ** clusterBits));
    this.max = maxRefcount(order);
  }

  get clusterSize(): number {
    return 2 ** this.clusterBits;
  }

  /** entries the refcount table has room for */
  get tableEntries(): number {
    return (this.tableClusters * this.clusterSize) / 8;
  }

  /** Offset of refcount block `rt` (0 = none), with its reserved bits and range checked. */
  blockOffset(rt: number): number {
    const e = this.entry(rt);
    if (typeof e === 'number') return e;
    const field = `refcount_table[${rt}]`;
    if (e.bad === 'unaligned') throw new DiskError('CORRUPT', BAD_BLOCK_ENTRY.unaligned, { path: this.path, struct: 'refcount table', field, found: e.offset });
    throw new DiskError('CORRUPT', BAD_BLOCK_ENTRY.pastEnd, { path: this.path, struct: 'refcount table', field, expected: `< ${this.file.size}`, found: e.offset });
  }

  /**
   * Refcount table entry `rt`: the block's offset (0 = none), or why it is bad. Check walks a
   * whole table of garbage with this (a DiskError per entry made tens of thousands of them).
   */
  entry(rt: number): number | { bad: keyof typeof BAD_BLOCK_ENTRY; offset: number } {
    if (rt >= this.tableEntries) return 0;
    const hi = this.table.readUInt32BE(rt * 8);
    const lo = this.table.readUInt32BE(rt * 8 + 4);
    if (hi === 0 && lo === 0) return 0;
    const offset = hi * 2 ** 32 + (lo >>> 0);
    if (lo & 0x1ff || offset % this.clusterSize !== 0) return { bad: 'unaligned', offset };
    if (offset >= MAX_HOST_OFFSET || offset >= this.file.size) return { bad: 'pastEnd', offset };
    return offset;
  }

  private blockSet: Set<number> | undefined;

  /** Whether a refcount block lives at byte offset `off` (the allocator's overlap check). */
  isBlockAt(off: number): boolean {
    if (!this.blockSet) {
      const set = new Set<number>();
      for (let rt = 0; rt < this.tableEntries; rt++) {
        const v = Number(this.table.readBigUInt64BE(rt * 8) & 0x00fffffffffffe00n);
        if (v !== 0) set.add(v);
      }
      this.blockSet = set;
    }
    return this.blockSet.has(off);
  }

  /** Check every table entry (read-write opens: a bad block must not be written to). */
  validateTable(): void {
    for (let rt = 0; rt < this.tableEntries; rt++) this.blockOffset(rt);
  }

  /** Refcount block `rt`, or null when the table has none (every refcount it covers is 0). */
  async block(rt: number): Promise<Buffer | null> {
    const off = this.blockOffset(rt);
    if (off === 0) return null;
    const hit = this.cache.get(off);
    if (hit) {
      this.cache.delete(off);
      this.cache.set(off, hit);
      return hit;
    }
    const b = await this.store.readZeroPadded(off, this.clusterSize);
    this.remember(off, b);
    return b;
  }

  private remember(off: number, b: Buffer): void {
    this.cache.set(off, b);
    if (this.cache.size > this.cacheLimit) this.cache.delete(this.cache.keys().next().value!);
  }

  async get(cluster: number): Promise<number> {
    const rt = Math.floor(cluster / this.entriesPerBlock);
    const b = await this.block(rt);
    return b ? getRefcount(b, cluster - rt * this.entriesPerBlock, this.order) : 0;
  }

  /** QEMU's alloc_clusters_noref: n contiguous clusters of refcount 0 from `freeIndex` on; returns the first. */
  async findFree(n: number): Promise<number> {
    const epb = this.entriesPerBlock;
    let run = 0;
    while (run < n) {
      const rt = Math.floor(this.freeIndex / epb);
      const b = await this.block(rt);
      const end = (rt + 1) * epb;
      if (!b) {
        // a missing block: everything it would cover is free
        const take = Math.min(n - run, end - this.freeIndex);
        this.freeIndex += take;
        run += take;
      } else {
        for (let c = this.freeIndex; c < end && run < n; c++) {
          this.freeIndex = c + 1;
          if (getRefcount(b, c - rt * epb, this.order) !== 0) run = 0;
          else run++;
        }
      }
      if (this.freeIndex * this.clusterSize >= Math.min(MAX_HOST_OFFSET, Number.MAX_SAFE_INTEGER)) {
        throw new DiskError('NOSPACE', 'qcow2 host offsets are exhausted', { path: this.path, field: 'refcount' });
      }
    }
    return this.freeIndex - n;
  }

  /** Allocate n contiguous clusters with refcount 1 (written to the file); returns the byte offset. */
  async alloc(n: number): Promise<number> {
    for (;;) {
      const start = await this.findFree(n);
      if (await this.update(start, n, 1)) return start * this.clusterSize;
    }
  }

  /**
   * Add `delta` to the refcounts of clusters [start, start+n). Returns false when a refcount
   * block had to be created first (nothing was changed then; the caller searches again).
   */
  async update(start: number, n: number, delta: number): Promise<boolean> {
    if (n <= 0) return true;
    const epb = this.entriesPerBlock;
    if (delta > 0) {
      for (let c = start; c < start + n; c = (Math.floor(c / epb) + 1) * epb) {
        if (this.blockOffset(Math.floor(c / epb)) === 0) {
          await this.createBlock(c);
          // QEMU then reverts the refcounts it had raised before this cluster, which moves
          // free_cluster_index back to the start of the range
          if (c > start) this.freeIndex = Math.min(this.freeIndex, start);
          return false;
        }
      }
    }
    for (let c = start; c < start + n; ) {
      const rt = Math.floor(c / epb);
      const last = Math.min(start + n, (rt + 1) * epb) - 1;
      const b = await this.block(rt);
      if (!b) {
        throw new DiskError('CORRUPT', 'freeing a cluster whose refcount is already 0 (no refcount block)', { path: this.path, struct: 'refcount table', field: `refcount_table[${rt}]`, found: c });
      }
      const base = rt * epb;
      for (let x = c; x <= last; x++) {
        const v = getRefcount(b, x - base, this.order) + delta;
        if (v < 0) throw new DiskError('CORRUPT', 'refcount would drop below 0', { path: this.path, struct: 'refcount block', field: `refcount[${x}]`, found: v - delta });
        if (v > this.max) throw new DiskError('NOTSUPPORTED', `refcount overflow (refcount_bits ${1 << this.order})`, { path: this.path, struct: 'refcount block', field: `refcount[${x}]` });
        setRefcount(b, x - base, this.order, v);
        if (v === 0 && x < this.freeIndex) this.freeIndex = x;
      }
      await this.writeBlockRange(rt, b, c - base, last - base);
      c = last + 1;
    }
    return true;
  }

  /** Set the refcount of one cluster whose block exists (check --repair). */
  async set(cluster: number, value: number): Promise<void> {
    const rt = Math.floor(cluster / this.entriesPerBlock);
    const b = await this.block(rt);
    if (!b) throw new DiskError('INTERNAL', 'set() on a cluster without a refcount block', { path: this.path, found: cluster });
    const i = cluster - rt * this.entriesPerBlock;
    setRefcount(b, i, this.order, Math.min(value, this.max));
    if (value === 0 && cluster < this.freeIndex) this.freeIndex = cluster;
    await this.writeBlockRange(rt, b, i, i);
  }

  /**
   * Set the refcounts of many clusters whose blocks exist (check --repair), one write per block
   * touched: a damaged table can need tens of thousands (a write each took a second of CPU).
   */
  async setMany(values: ReadonlyMap<number, number>): Promise<void> {
    const clusters = [...values.keys()].sort((a, b) => a - b);
    await this.rewriteSorted(clusters, (x) => Math.min(values.get(x)!, this.max), (rt, x) => new DiskError('INTERNAL', 'setMany() on a cluster without a refcount block', { path: this.path, field: `refcount_table[${rt}]`, found: x }));
  }


  /** Make sure cluster `c` has a refcount block (created beyond `freeIndex` as `alloc` would). */
  async ensureBlock(c: number): Promise<void> {
    while (this.blockOffset(Math.floor(c / this.entriesPerBlock)) === 0) await this.createBlock(c);
  }

  /** Lower the refcounts of many clusters at once (each listed once per reference), one write per block. */
  async decrementMany(clusters: number[]): Promise<void> {
    await this.adjustMany(clusters, -1);
  }


  /**
   * Add `delta` (+1 or -1) to the refcounts of many clusters at once, each listed once per
   * reference; one write per block. Raising needs every block to exist (clusters in use have
   * one) and checks every new value against the width before anything is written.
   */
  async adjustMany(clusters: number[], delta: 1 | -1): Promise<void> {
    clusters.sort((a, b) => a - b);
    if (delta > 0) {
      for (let i = 0; i < clusters.length; ) {
        const x = clusters[i]!;
        let n = 0;
        for (; i < clusters.length && clusters[i] === x; i++) n++;
        const v = (await this.get(x)) + n;
        if (v > this.max) throw new DiskError('NOTSUPPORTED', `refcount overflow: cluster ${x} would need refcount ${v}, refcount_bits ${1 << this.order} holds at most ${this.max}`, { path: this.path, struct: 'refcount block', field: `refcount[${x}]`, expected: `<= ${this.max}`, found: v });
      }
    }
    await this.rewriteSorted(
      clusters,
      (x, old) => {
        const v = old + delta;
        if (v < 0) throw new DiskError('CORRUPT', 'refcount would drop below 0', { path: this.path, struct: 'refcount block', field: `refcount[${x}]`, found: 0 });
        return v;
      },
      (rt, x) => new DiskError('CORRUPT', delta < 0 ? 'freeing a cluster whose refcount is already 0 (no refcount block)' : 'a cluster in use has no refcount block', { path: this.path, struct: 'refcount table', field: `refcount_table[${rt}]`, found: x }),
    );
  }

  /**
   * New refcounts for clusters in ascending order (a cluster listed twice is changed twice), one
   * write per refcount block touched; `noBlock` is the error for a cluster without a block.
   */
  private async rewriteSorted(sorted: readonly number[], value: (cluster: number, old: number) => number, noBlock: (rt: number, cluster: number) => DiskError): Promise<void> {
    const epb = this.entriesPerBlock;
    for (let i = 0; i < sorted.length; ) {
      const rt = Math.floor(sorted[i]! / epb);
      const b = await this.block(rt);
      if (!b) throw noBlock(rt, sorted[i]!);
      const base = rt * epb;
      const first = sorted[i]! - base;
      let last = first;
      for (; i < sorted.length && Math.floor(sorted[i]! / epb) === rt; i++) {
        const x = sorted[i]!;
        const v = value(x, getRefcount(b, x - base, this.order));
        setRefcount(b, x - base, this.order, v);
        if (v === 0 && x < this.freeIndex) this.freeIndex = x;
        last = x - base;
      }
      await this.writeBlockRange(rt, b, first, last);
    }
  }

  /** Highest cluster index with a refcount above 0, or -1. */
  async lastUsed(): Promise<number> {
    const epb = this.entriesPerBlock;
    for (let rt = this.tableEntries - 1; rt >= 0; rt--) {
      const b = await this.block(rt);
      if (!b) continue;
      for (let i = epb - 1; i >= 0; i--) if (getRefcount(b, i, this.order) !== 0) return rt * epb + i;
    }
    return -1;
  }

  /**
   * Drop refcount blocks that describe nothing in use but (maybe) themselves (defragment made
   * them for room it no longer uses): the table entry cleared first, flushed, then a block's
   * refcount lowered where another block records it. A crash in between leaves that block
   * leaked, nothing else. Repeated while it frees more (a block recording the refcount of the
   * one just dropped). Returns how many went.
   */
  async dropEmptyBlocks(): Promise<number> {
    const epb = this.entriesPerBlock;
    let dropped = 0;
    for (let changed = true; changed; ) {
      changed = false;
      for (let rt = this.tableEntries - 1; rt >= 0; rt--) {
        const off = this.blockOffset(rt);
        if (off === 0) continue;
        const b = (await this.block(rt))!;
        const self = off / this.clusterSize;
        const selfHere = Math.floor(self / epb) === rt;
        let used = false;
        for (let i = 0; i < epb && !used; i++) if (getRefcount(b, i, this.order) !== 0 && !(selfHere && rt * epb + i === self)) used = true;
        if (used) continue;
        await this.setTableEntry(rt, 0);
        await this.store.flush();
        this.cache.delete(off);
        if (!selfHere) await this.update(self, 1, -1);
        dropped++;
        changed = true;
      }
    }
    return dropped;
  }

  private async writeBlockRange(rt: number, b: Buffer, first: number, last: number): Promise<void> {
    const [from, to] = refcountBytes(first, last, this.order);
    const off = this.blockOffset(rt);
    await this.store.write(off + from, b.subarray(from, to));
    this.file.size = Math.max(this.file.size, off + to);
  }

  private async setTableEntry(rt: number, offset: number): Promise<void> {
    this.blockSet = undefined;
    this.table.writeBigUInt64BE(BigInt(offset), rt * 8);
    await this.store.write(this.tableOffset + rt * 8, this.table.subarray(rt * 8, rt * 8 + 8));
  }

  private async writeNewBlock(at: number, b: Buffer): Promise<void> {
    await this.store.write(at, b);
    this.file.size = Math.max(this.file.size, at + b.length);
    this.remember(at, b);
  }

  /** QEMU's alloc_refcount_block for the block covering cluster `c` (the caller then restarts). */
  private async createBlock(c: number): Promise<void> {
    const epb = this.entriesPerBlock;
    const rt = Math.floor(c / epb);
    if (rt >= this.tableEntries) {
      await this.growTable(rt);
      return;
    }
    const nb = await this.findFree(1);
    const b = Buffer.alloc(this.clusterSize);
    if (Math.floor(nb / epb) === rt) {
      // the block describes itself
      setRefcount(b, nb - rt * epb, this.order, 1);
    } else if (!(await this.update(nb, 1, 1))) {
      return; // its own refcount needed yet another block: give this one up and start over
    }
    await this.writeNewBlock(nb * this.clusterSize, b);
    await this.setTableEntry(rt, nb * this.clusterSize);
  }

  /**
   * A larger refcount table covering `rtNeeded`: written past everything in use, with new
   * refcount blocks for the table's own clusters (and theirs), then the header switch, then the
   * old table freed. A crash before the switch leaves unreferenced clusters of refcount 0 past
   * the old end; after it, the old table leaks.
   */
  private async growTable(rtNeeded: number): Promise<void> {
    const cs = this.clusterSize;
    const epb = this.entriesPerBlock;
    const start = Math.max(Math.ceil(this.file.size / cs), (await this.lastUsed()) + 1);
    let tableClusters = Math.max(Math.ceil(((rtNeeded + 1) * 8) / cs), Math.ceil((this.tableClusters * 3) / 2));
    let blocks = 0;
    let firstRt = 0;
    let lastRt = 0;
    for (;;) {
      const end = start + blocks + tableClusters;
      firstRt = Math.floor(start / epb);
      lastRt = Math.floor((end - 1) / epb);
      let missing = 0;
      for (let rt = firstRt; rt <= lastRt; rt++) if (this.blockOffset(rt) === 0) missing++;
      const needClusters = Math.ceil(((Math.max(rtNeeded, lastRt) + 1) * 8) / cs);
      if (needClusters > tableClusters) tableClusters = needClusters;
      else if (missing > blocks) blocks = missing;
      else break;
    }
    if (tableClusters * cs > MAX_REFTABLE_BYTES) {
      throw new DiskError('NOSPACE', 'the refcount table would exceed QEMU\'s 8 MiB limit', { path: this.path, field: 'refcount_table_clusters', expected: `<= ${MAX_REFTABLE_BYTES / cs}`, found: tableClusters });
    }
    const table = Buffer.alloc(tableClusters * cs);
    this.table.copy(table, 0, 0, Math.min(this.table.length, table.length));
    const fresh = new Map<number, { at: number; b: Buffer }>();
    let next = start;
    for (let rt = firstRt; rt <= lastRt; rt++) {
      if (this.blockOffset(rt) !== 0) continue;
      fresh.set(rt, { at: next, b: Buffer.alloc(cs) });
      table.writeBigUInt64BE(BigInt(next * cs), rt * 8);
      next++;
    }
    const tableAt = next;
    const end = tableAt + tableClusters;
    // refcount 1 for every cluster of the new area: in the new blocks, or in an existing block
    // (the range `start` falls in may have one), which is written first
    for (let c = start; c < end; ) {
      const rt = Math.floor(c / epb);
      const stop = Math.min(end, (rt + 1) * epb);
      const f = fresh.get(rt);
      if (f) for (let x = c; x < stop; x++) setRefcount(f.b, x - rt * epb, this.order, 1);
      else if (!(await this.update(c, stop - c, 1))) throw new DiskError('INTERNAL', 'refcount table growth met a missing block', { path: this.path });
      c = stop;
    }
    for (const f of fresh.values()) await this.writeNewBlock(f.at * cs, f.b);
    await this.store.write(tableAt * cs, table);
    this.file.size = Math.max(this.file.size, end * cs);
    const old = { offset: this.tableOffset, clusters: this.tableClusters };
    await this.tableMoved(tableAt * cs, tableClusters);
    this.blockSet = undefined;
    this.table = table;
    this.tableOffset = tableAt * cs;
    this.tableClusters = tableClusters;
    await this.update(old.offset / cs, old.clusters, -1);
  }
}
