/**
 * One S3 object read as a ByteStore: HEAD once for its size and ETag, then ranged GetObject
 * requests that carry If-Match with that ETag, so an object replaced while it is read fails
 * (a DiskError) instead of mixing old and new bytes. Every reply is checked against what was
 * asked: its length, its Content-Range, and its ETag (stores that ignore If-Match, like s3rver,
 * are caught there).
 *
 * Reads go through a block cache (1 MiB blocks, at most 32 of them: 32 MiB): drivers read their
 * headers and tables in small pieces that share blocks. A read that starts where the previous
 * one ended is taken as a scan and fetches the next blocks ahead (up to 8 MiB) in the same
 * request; runs longer than 8 MiB are split into requests sent in parallel. A read larger than
 * half the cache goes around it. Objects are immutable here: writing goes through the
 * namespace's create (upload.ts).
 */
import { DiskError } from '../../core/errors.js';
import type { ByteStore } from '../store.js';
import { s3Error, type S3Context } from './client.js';

const BLOCK = 1024 * 1024;
const CACHE_BLOCKS = 32;
const READ_AHEAD_BLOCKS = 8;
const MAX_GET = 8 * 1024 * 1024;

export interface ObjectHead {
  size: number;
  etag?: string;
  mtimeMs: number;
}

export async function headObject(ctx: S3Context, bucket: string, key: string, display: string): Promise<ObjectHead> {
  try {
    const r = await ctx.client.send(new ctx.s3.HeadObjectCommand({ Bucket: bucket, Key: key }));
    const size = r.ContentLength;
    if (size === undefined || !Number.isSafeInteger(size) || size < 0) throw new DiskError('FILEIO', 'HEAD gave no usable Content-Length', { path: display, field: 'Content-Length', found: size });
    return { size, etag: r.ETag, mtimeMs: r.LastModified?.getTime() ?? 0 };
  } catch (err) {
    throw s3Error(err, display, 'HEAD');
  }
}

export class S3ObjectStore implements ByteStore {
  readonly readOnly = true;
  private readonly blocks = new Map<number, Promise<Buffer>>();
  private lastEnd = -1;
  private closed = false;
  /** GET requests sent (tests look at the cache through it) */
  requests = 0;

  private constructor(
    private readonly ctx: S3Context,
    private readonly bucket: string,
    private readonly key: string,
    readonly name: string,
    readonly head: ObjectHead,
  ) {}

  static async open(ctx: S3Context, bucket: string, key: string, display: string): Promise<S3ObjectStore> {
    return new S3ObjectStore(ctx, bucket, key, display, await headObject(ctx, bucket, key, display));
  }

  async size(): Promise<number> {
    return this.head.size;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const b = Buffer.allocUnsafe(length);
    await this.readInto(b, offset);
    return b;
  }

  async readZeroPadded(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    const have = Math.max(0, Math.min(length, this.head.size - offset));
    if (have > 0) await this.readInto(out.subarray(0, have), offset);
    return out;
  }

  async readInto(into: Buffer, offset: number): Promise<void> {
    const length = into.length;
    if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.name });
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > this.head.size) {
      throw new DiskError('OUTOFRANGE', `${length} bytes at ${offset} lie outside the object (${this.head.size} bytes)`, { path: this.name, offset, length });
    }
    if (length === 0) return;
    const sequential = offset === this.lastEnd;
    this.lastEnd = offset + length;
    if (length > (CACHE_BLOCKS * BLOCK) / 2) return this.fetchInto(into, offset);
    const first = Math.floor(offset / BLOCK);
    const last = Math.floor((offset + length - 1) / BLOCK);
    const lastBlock = Math.floor((this.head.size - 1) / BLOCK);
    const until = Math.min(lastBlock, last + (sequential ? READ_AHEAD_BLOCKS : 0));
    this.fetchMissing(first, until);
    // taken now: a parallel read may evict them from the map before they arrive
    const wanted: Promise<Buffer>[] = [];
    for (let b = first; b <= last; b++) wanted.push(this.blocks.get(b)!);
    for (let b = first; b <= last; b++) {
      const block = await wanted[b - first]!;
      const from = Math.max(offset, b * BLOCK);
      const to = Math.min(offset + length, (b + 1) * BLOCK);
      block.copy(into, from - offset, from - b * BLOCK, to - b * BLOCK);
    }
  }

  /** start fetches for the blocks of [first, until] not cached or on the way: one request per run */
  private fetchMissing(first: number, until: number): void {
    let runStart = -1;
    const flush = (end: number) => {
      if (runStart < 0) return;
      const start = runStart;
      runStart = -1;
      const from = start * BLOCK;
      const to = Math.min(this.head.size, (end + 1) * BLOCK);
      const run = Buffer.allocUnsafe(to - from);
      const got = this.fetchInto(run, from);
      for (let b = start; b <= end; b++) {
        const p = got.then(() => run.subarray((b - start) * BLOCK, Math.min(run.length, (b - start + 1) * BLOCK)));
        // a failed block is forgotten, so a later read asks again
        p.catch(() => {
          if (this.blocks.get(b) === p) this.blocks.delete(b);
        });
        this.blocks.set(b, p);
      }
    };
    for (let b = first; b <= until; b++) {
      const have = this.blocks.get(b);
      if (have) {
        flush(b - 1);
        // most recently used last: the map's order is the eviction order
        this.blocks.delete(b);
        this.blocks.set(b, have);
      } else if (runStart < 0) runStart = b;
    }
    flush(until);
    while (this.blocks.size > CACHE_BLOCKS) this.blocks.delete(this.blocks.keys().next().value!);
  }

  /** [offset, offset+into.length) from the object, in parallel requests of at most MAX_GET */
  private async fetchInto(into: Buffer, offset: number): Promise<void> {
    const parts: Promise<void>[] = [];
    for (let at = 0; at < into.length; at += MAX_GET) parts.push(this.get(into.subarray(at, Math.min(into.length, at + MAX_GET)), offset + at));
    await Promise.all(parts);
  }

  private async get(into: Buffer, offset: number): Promise<void> {
    const end = offset + into.length - 1;
    const range = `bytes=${offset}-${end}`;
    this.requests++;
    let body: Uint8Array;
    try {
      const r = await this.ctx.client.send(new this.ctx.s3.GetObjectCommand({ Bucket: this.bucket, Key: this.key, Range: range, ...(this.head.etag ? { IfMatch: this.head.etag } : {}) }));
      if (this.head.etag && r.ETag && r.ETag !== this.head.etag) {
        await r.Body?.transformToByteArray().catch(() => {});
        throw new DiskError('FILEIO', 'the object changed while it was read (its ETag is no longer the one it was opened with)', { path: this.name, field: 'ETag', expected: this.head.etag, found: r.ETag });
      }
      const cr = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(r.ContentRange ?? '');
      if (!cr || Number(cr[1]) !== offset || Number(cr[2]) !== end) {
        await r.Body?.transformToByteArray().catch(() => {});
        throw new DiskError('FILEIO', 'the reply does not hold the range asked for', { path: this.name, field: 'Content-Range', expected: `bytes ${offset}-${end}/${this.head.size}`, found: r.ContentRange ?? '(none)' });
      }
      if (cr[3] !== '*' && Number(cr[3]) !== this.head.size) throw new DiskError('FILEIO', 'the object changed size while it was read', { path: this.name, field: 'Content-Range', expected: this.head.size, found: cr[3] });
      body = (await r.Body?.transformToByteArray()) ?? new Uint8Array(0);
    } catch (err) {
      throw s3Error(err, this.name, `GET ${range}`);
    }
    if (body.length !== into.length) throw new DiskError('FILEIO', `a short reply: ${body.length} of ${into.length} bytes`, { path: this.name, field: 'body', offset, expected: into.length, found: body.length });
    into.set(body);
  }

  async write(): Promise<void> {
    throw new DiskError('RDONLY', 'an S3 object is not written in place', { path: this.name });
  }
  async writev(): Promise<void> {
    throw new DiskError('RDONLY', 'an S3 object is not written in place', { path: this.name });
  }
  async truncate(): Promise<void> {
    throw new DiskError('RDONLY', 'an S3 object is not written in place', { path: this.name });
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {
    this.closed = true;
    this.blocks.clear();
  }
}
