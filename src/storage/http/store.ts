/**
 * An HTTP object as a read-only ByteStore: reads go through a cache of fixed-size blocks
 * (default 1 MiB, least recently used dropped past a cap, default 64 MiB), each missing block
 * one ranged GET, at most `parallel` at once. Reads that follow each other through the object
 * start read-ahead of the next blocks, a window that doubles on every sequential read up to
 * `readAheadBlocks`, so a convert or a checksum streams while a random reader fetches only
 * what it touches. A block being fetched is shared by every reader that wants it.
 *
 * Once a read finds the object changed (object.ts), the store stays failed: no later read
 * may mix the versions.
 */
import { DiskError } from '../../core/errors.js';
import type { ByteStore } from '../store.js';
import type { HttpClient } from './client.js';
import { readRange, type ObjectFacts } from './object.js';

export interface HttpStoreOptions {
  /** cache block size in bytes (a power of two, 64 KiB–16 MiB); default 1 MiB */
  blockSize?: number;
  /** cache size in bytes; default 64 MiB */
  cacheBytes?: number;
  /** largest read-ahead window in blocks; default 16 (0: none) */
  readAheadBlocks?: number;
  /** block fetches in flight at once; default 8 */
  parallel?: number;
}

/** a counting gate: demand reads go before read-ahead */
class Gate {
  private active = 0;
  private readonly urgent: (() => void)[] = [];
  private readonly later: (() => void)[] = [];
  constructor(private readonly max: number) {}
  async run<T>(prefetch: boolean, fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((r) => (prefetch ? this.later : this.urgent).push(r));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.urgent.shift() ?? this.later.shift();
      if (next) next();
      else this.active--;
    }
  }
}

export class HttpStore implements ByteStore {
  readonly name: string;
  readonly readOnly = true;
  private readonly blockSize: number;
  private readonly cacheBytes: number;
  private readonly readAheadMax: number;
  /** block index -> bytes, oldest use first */
  private readonly cache = new Map<number, Buffer>();
  private cached = 0;
  private readonly inflight = new Map<number, Promise<Buffer>>();
  private readonly gate: Gate;
  private broken: DiskError | undefined;
  private closed = false;
  /** the sequential-read detector: blocks of the last read, and the read-ahead window */
  private lastFirst = -2;
  private lastEnd = -2;
  private window = 0;
  /** counters for tests and progress */
  readonly stats = { blockFetches: 0, cacheHits: 0, prefetches: 0 };

  constructor(
    private readonly client: HttpClient,
    readonly facts: ObjectFacts,
    opts: HttpStoreOptions = {},
    private readonly onClose?: () => void,
  ) {
    this.name = facts.display;
    const bs = opts.blockSize ?? 1024 * 1024;
    if (!Number.isInteger(Math.log2(bs)) || bs < 65536 || bs > 16 * 1024 * 1024) throw new DiskError('INVAL', 'the HTTP block size must be a power of two from 64 KiB to 16 MiB', { path: this.name, field: 'blockSize', found: bs });
    this.blockSize = bs;
    this.cacheBytes = Math.max(bs, opts.cacheBytes ?? 64 * 1024 * 1024);
    this.readAheadMax = Math.max(0, Math.min(opts.readAheadBlocks ?? 16, Math.floor(this.cacheBytes / bs / 2)));
    this.gate = new Gate(Math.max(1, opts.parallel ?? 8));
  }

  async size(): Promise<number> {
    return this.facts.size;
  }

  private blockLength(i: number): number {
    return Math.min(this.blockSize, this.facts.size - i * this.blockSize);
  }

  private remember(i: number, b: Buffer): void {
    this.cache.set(i, b);
    this.cached += b.length;
    for (const [k, v] of this.cache) {
      if (this.cached <= this.cacheBytes) break;
      this.cache.delete(k);
      this.cached -= v.length;
    }
  }

  /** block `i`, from the cache, a fetch in flight, or a new fetch */
  private block(i: number, prefetch: boolean): Promise<Buffer> {
    const hit = this.cache.get(i);
    if (hit) {
      // most recently used goes last
      this.cache.delete(i);
      this.cache.set(i, hit);
      if (!prefetch) this.stats.cacheHits++;
      return Promise.resolve(hit);
    }
    const pending = this.inflight.get(i);
    if (pending) return pending;
    if (prefetch) this.stats.prefetches++;
    const p = this.gate
      .run(prefetch, async () => {
        if (this.broken) throw this.broken;
        if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.name });
        const b = Buffer.allocUnsafe(this.blockLength(i));
        this.stats.blockFetches++;
        await readRange(this.client, this.facts, i * this.blockSize, b);
        return b;
      })
      .then(
        (b) => {
          this.inflight.delete(i);
          if (!this.closed) this.remember(i, b);
          return b;
        },
        (err: unknown) => {
          this.inflight.delete(i);
          // a change of version or a refusal ends the store; a lost connection only this read
          if (err instanceof DiskError && (err.details.field === 'ETag' || err.details.field === 'Last-Modified' || err.details.field === 'Content-Range' || err.code === 'NOTSUPPORTED')) this.broken ??= err;
          throw err;
        },
      );
    this.inflight.set(i, p);
    return p;
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.facts.size) {
      throw new DiskError('OUTOFRANGE', `${length} bytes at ${offset} lie outside the object (${this.facts.size} bytes)`, { path: this.name, offset, length });
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const b = Buffer.allocUnsafe(length);
    await this.readInto(b, offset);
    return b;
  }

  async readInto(into: Buffer, offset: number): Promise<void> {
    if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.name });
    if (this.broken) throw this.broken;
    this.checkRange(offset, into.length);
    if (into.length === 0) return;
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const end = Math.floor((offset + into.length - 1) / bs) + 1;
    this.readAhead(first, end);
    const parts: Promise<void>[] = [];
    for (let i = first; i < end; i++) {
      parts.push(
        this.block(i, false).then((b) => {
          const from = Math.max(offset, i * bs);
          const to = Math.min(offset + into.length, i * bs + b.length);
          b.copy(into, from - offset, from - i * bs, to - i * bs);
        }),
      );
    }
    const got = await Promise.allSettled(parts);
    const bad = got.find((r) => r.status === 'rejected');
    if (bad) throw (bad as PromiseRejectedResult).reason;
  }

  /**
   * A read that goes on from the last one (starts inside or right after it and reaches further)
   * doubles the window and fetches that many blocks ahead; a jump elsewhere closes the window.
   */
  private readAhead(first: number, end: number): void {
    if (first < this.lastFirst || first > this.lastEnd) {
      this.window = 0;
      this.lastFirst = first;
      this.lastEnd = end;
      return;
    }
    if (end <= this.lastEnd) return;
    this.window = Math.min(this.readAheadMax, Math.max(1, this.window * 2));
    this.lastFirst = first;
    this.lastEnd = end;
    const blocks = Math.ceil(this.facts.size / this.blockSize);
    for (let i = end; i < Math.min(blocks, end + this.window); i++) {
      if (this.cache.has(i) || this.inflight.has(i)) continue;
      // read-ahead that fails is forgotten: the read that needs the block asks again and reports
      this.block(i, true).catch(() => {});
    }
  }

  async readZeroPadded(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    const have = Math.max(0, Math.min(length, this.facts.size - offset));
    if (have > 0) await this.readInto(out.subarray(0, have), offset);
    return out;
  }

  private readOnlyError(): DiskError {
    return new DiskError('RDONLY', 'an http(s) object is read-only: vdkit does not write over HTTP', { path: this.name });
  }

  async write(_offset: number, _data: Buffer): Promise<void> {
    throw this.readOnlyError();
  }

  async writev(_offset: number, _data: readonly Buffer[]): Promise<void> {
    throw this.readOnlyError();
  }

  async truncate(_length: number): Promise<void> {
    throw this.readOnlyError();
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cache.clear();
    this.cached = 0;
    this.onClose?.();
  }
}
