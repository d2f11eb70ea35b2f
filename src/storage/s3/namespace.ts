/**
 * S3 (and compatible stores) as a namespace. A name is `s3://bucket/key`; a relative name is
 * taken beside its base's key, in its bucket (a child's parent hint, a VMDK's extent files), so
 * chains and multi-file disks open as they do from a folder. "Folders" are key prefixes, listed
 * with ListObjectsV2 and the '/' delimiter.
 *
 * Objects cannot be written in place. `create` hands out a spool store (a temporary local file
 * that takes random writes); the object is uploaded from it when the store closes, and appears
 * whole then. A staging name (convert's hidden `.x.vdkit-partial-<pid>.ext`, writeAtomic's
 * `.vdkit-tmp-`) is not uploaded on close: its spool stays local until `rename` uploads it under
 * its final name (no copy of an object and no partial object on the store) or `remove` drops
 * it. `createSequential` is the way for outputs made front to back: a multipart upload with
 * bounded memory and no local file (upload.ts).
 */
import { rmSync } from 'node:fs';
import { mkdtemp, rm, rmdir, stat as fsStat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join as hostJoin } from 'node:path';
import { DiskError } from '../../core/errors.js';
import { basename, dirname, normalize } from '../../core/names.js';
import { FileNamespace } from '../file.js';
import type { CacheMode, NameKind, NameStat, Namespace } from '../namespace.js';
import type { CommittingSink } from '../sink.js';
import type { ByteStore } from '../store.js';
import { StoreWrapper } from '../wrappers.js';
import { s3Context, s3Error, s3Settings, type S3Context, type S3Settings } from './client.js';
import { headObject, S3ObjectStore } from './object.js';
import { S3UploadSink, uploadFile } from './upload.js';
import { isS3Url, parseS3Url, s3Display, type S3Url } from './url.js';

/** names a writer builds under and renames when done: held back locally until then */
export function isStagingName(name: string): boolean {
  const b = basename(name);
  return b.includes('.vdkit-partial-') || b.includes('.vdkit-tmp-');
}

/** listing stops here: a "folder" with more objects is not one vdkit looks through */
const MAX_LIST = 100_000;

interface Where {
  bucket: string;
  key: string;
  display: string;
}

/** A spool store: its close hands the file to the namespace (upload now, or hold until renamed). */
class SpoolStore extends StoreWrapper {
  private done = false;
  constructor(
    inner: ByteStore,
    private readonly where: Where,
    private readonly onClose: () => Promise<void>,
  ) {
    super(inner);
  }
  override get name(): string {
    return this.where.display;
  }
  override async close(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.inner.close();
    await this.onClose();
  }
}

export class S3Namespace implements Namespace {
  readonly label: string;
  readonly cacheMode: CacheMode = 'writeback';
  /** staging names (display form) whose bytes are still only in a local spool file */
  private readonly staged = new Map<string, string>();
  private spoolDir: Promise<string> | undefined;
  private spools = 0;
  private readonly spoolFiles = new FileNamespace({ cacheMode: 'unsafe' });

  private constructor(
    private readonly ctx: S3Context,
    /** the bucket a name without one ("/x", "x") is taken in */
    private readonly home: string,
  ) {
    this.label = `s3${ctx.settings.endpoint ? ` (${ctx.settings.endpoint})` : ''}`;
  }

  /** the namespace for `url` (its endpoint, region and style) and the name of the object in it */
  static async fromUrl(url: string, env: NodeJS.ProcessEnv = process.env): Promise<{ namespace: S3Namespace; name: string }> {
    const u = parseS3Url(url);
    return { namespace: await S3Namespace.create(u, s3Settings(u, env)), name: u.display };
  }

  static async create(u: S3Url, settings: S3Settings): Promise<S3Namespace> {
    return new S3Namespace(await s3Context(settings), u.bucket);
  }

  /** the SDK client and settings (tests, and callers that list uploads) */
  get context(): S3Context {
    return this.ctx;
  }

  private where(name: string): Where {
    let bucket: string;
    let key: string;
    if (isS3Url(name)) ({ bucket, key } = parseS3Url(name));
    else {
      bucket = this.home;
      key = normalize('/' + name).slice(1);
    }
    return { bucket, key, display: s3Display(bucket, key) };
  }

  private whereObject(name: string): Where {
    const w = this.where(name);
    if (w.key === '') throw new DiskError('INVAL', 'the name is a bucket, not an object', { path: w.display, field: 'key' });
    return w;
  }

  async open(name: string, opts: { write?: boolean } = {}): Promise<ByteStore> {
    const w = this.whereObject(name);
    const spool = this.staged.get(w.display);
    if (spool !== undefined) return this.spoolStore(w, await this.spoolFiles.open(spool, { write: opts.write }), spool);
    if (opts.write) throw new DiskError('NOTSUPPORTED', 'an S3 object cannot be written in place: convert into a new object instead', { path: w.display, field: 'write' });
    return S3ObjectStore.open(this.ctx, w.bucket, w.key, w.display);
  }

  async create(name: string, opts: { overwrite?: boolean } = {}): Promise<ByteStore> {
    const w = this.whereObject(name);
    if (!opts.overwrite && (await this.exists(w.display))) throw new DiskError('FILEEXISTS', undefined, { path: w.display });
    const old = this.staged.get(w.display);
    if (old !== undefined) await this.dropSpool(w.display);
    const dir = await (this.spoolDir ??= mkdtemp(hostJoin(tmpdir(), 'vdkit-s3-spool-')).then((d) => {
      // a spool is of no use once the process is gone (a failed convert that could not list
      // its files, an exit between close and rename): the folder goes with the process
      process.once('exit', () => rmSync(d, { recursive: true, force: true }));
      return d;
    }));
    const path = hostJoin(dir, `${++this.spools}-${basename(w.key).replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 100)}`);
    return this.spoolStore(w, await this.spoolFiles.create(path, { overwrite: true }), path);
  }

  private spoolStore(w: Where, inner: ByteStore, path: string): ByteStore {
    if (isStagingName(w.display)) this.staged.set(w.display, path);
    return new SpoolStore(inner, w, async () => {
      if (isStagingName(w.display)) return;
      try {
        await uploadFile({ ctx: this.ctx, ...w }, path, (await fsStat(path)).size);
      } finally {
        await rm(path, { force: true });
        if (this.staged.size === 0 && this.spoolDir) await rmdir(await this.spoolDir).catch(() => {});
      }
    });
  }

  private async dropSpool(display: string): Promise<void> {
    const path = this.staged.get(display);
    if (path === undefined) return;
    this.staged.delete(display);
    await rm(path, { force: true });
    if (this.staged.size === 0 && this.spoolDir) await rmdir(await this.spoolDir).catch(() => {});
  }

  /**
   * A new object written front to back, as a multipart upload: it appears when the sink closes
   * and not at all when it is aborted. `sizeHint`: about how big it will be (sets the part size).
   */
  async createSequential(name: string, opts: { overwrite?: boolean; sizeHint?: number } = {}): Promise<CommittingSink> {
    const w = this.whereObject(name);
    if (!opts.overwrite && (await this.exists(w.display))) throw new DiskError('FILEEXISTS', undefined, { path: w.display });
    return new S3UploadSink({ ctx: this.ctx, ...w }, { sizeHint: opts.sizeHint });
  }

  async rename(from: string, to: string): Promise<void> {
    const f = this.whereObject(from);
    const t = this.whereObject(to);
    if (f.display === t.display) return;
    const spool = this.staged.get(f.display);
    if (spool !== undefined) {
      // the staged bytes go up under their final name: one upload, no copy
      await uploadFile({ ctx: this.ctx, ...t }, spool, (await fsStat(spool)).size);
      await this.dropSpool(f.display);
      return;
    }
    try {
      await this.ctx.client.send(new this.ctx.s3.CopyObjectCommand({ Bucket: t.bucket, Key: t.key, CopySource: `${f.bucket}/${f.key.split('/').map(encodeURIComponent).join('/')}` }));
    } catch (err) {
      throw s3Error(err, f.display, `copy to ${t.display}`);
    }
    await this.remove(f.display);
  }

  async link(): Promise<boolean> {
    return false;
  }

  async remove(name: string): Promise<void> {
    const w = this.whereObject(name);
    if (this.staged.has(w.display)) return this.dropSpool(w.display);
    try {
      await this.ctx.client.send(new this.ctx.s3.DeleteObjectCommand({ Bucket: w.bucket, Key: w.key }));
    } catch (err) {
      const e = s3Error(err, w.display, 'DELETE');
      if (e.code !== 'FILENOTFOUND') throw e;
    }
  }

  /** keys under `dir/` up to the next '/', and the spools staged there */
  async list(dirName: string): Promise<string[]> {
    const w = this.where(dirName);
    const prefix = w.key === '' ? '' : `${w.key}/`;
    const out = new Set<string>();
    let token: string | undefined;
    try {
      do {
        const r = await this.ctx.client.send(new this.ctx.s3.ListObjectsV2Command({ Bucket: w.bucket, Prefix: prefix, Delimiter: '/', ContinuationToken: token }));
        for (const o of r.Contents ?? []) if (o.Key && o.Key.length > prefix.length) out.add(o.Key.slice(prefix.length));
        for (const p of r.CommonPrefixes ?? []) if (p.Prefix) out.add(p.Prefix.slice(prefix.length).replace(/\/$/, ''));
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
        if (out.size > MAX_LIST) throw new DiskError('NOTSUPPORTED', `more than ${MAX_LIST} names under this prefix`, { path: w.display, field: 'list' });
      } while (token);
    } catch (err) {
      throw s3Error(err, w.display, 'LIST');
    }
    for (const s of this.staged.keys()) {
      const sw = this.where(s);
      if (sw.bucket === w.bucket && dirname('/' + sw.key) === normalize('/' + w.key)) out.add(basename(sw.key));
    }
    return [...out];
  }

  async stat(name: string): Promise<NameStat> {
    const w = this.whereObject(name);
    const spool = this.staged.get(w.display);
    if (spool !== undefined) {
      const st = await fsStat(spool);
      return { size: st.size, id: `spool:${spool}`, mtimeMs: st.mtimeMs };
    }
    const h = await headObject(this.ctx, w.bucket, w.key, w.display);
    return { size: h.size, id: `${w.display}@${h.etag ?? h.mtimeMs}`, mtimeMs: h.mtimeMs };
  }

  async exists(name: string): Promise<boolean> {
    return (await this.kind(name)) === 'file';
  }

  async kind(name: string): Promise<NameKind> {
    const w = this.where(name);
    if (w.key === '') return 'dir';
    try {
      await this.stat(w.display);
      return 'file';
    } catch (err) {
      if (!(err instanceof DiskError && err.code === 'FILENOTFOUND')) throw err;
    }
    try {
      const r = await this.ctx.client.send(new this.ctx.s3.ListObjectsV2Command({ Bucket: w.bucket, Prefix: `${w.key}/`, MaxKeys: 1 }));
      return (r.KeyCount ?? r.Contents?.length ?? 0) > 0 ? 'dir' : 'missing';
    } catch (err) {
      const e = s3Error(err, w.display, 'LIST');
      if (e.code === 'FILENOTFOUND') return 'missing';
      throw e;
    }
  }

  async realName(name: string): Promise<string> {
    return this.absolute(name);
  }

  absolute(name: string): string {
    return this.where(name).display;
  }

  resolve(base: string, relativeName: string): string {
    if (isS3Url(relativeName)) return this.where(relativeName).display;
    const b = this.where(base);
    // "/x" is the key x of the base's bucket; anything else sits beside the base
    const key = relativeName.startsWith('/') ? normalize(relativeName) : normalize(`${dirname('/' + b.key)}/${relativeName}`);
    return s3Display(b.bucket, key.slice(1));
  }
}
