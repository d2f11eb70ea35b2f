/**
 * Writing objects. S3 has no random writes, so there are two ways in:
 *
 * - `S3UploadSink`, for outputs made front to back (raw, streamOptimized VMDK): appended bytes
 *   stream into a multipart upload (lib-storage's Upload) through a small pipe. Memory is
 *   bounded: `queueSize` parts of `partSize` bytes in flight plus the pipe's 1 MiB; when every
 *   part is busy the pipe fills and `append` waits. The object appears when `close()` completes
 *   the upload; `abort()` (a failure, Ctrl-C) aborts it so no object and no pending parts stay.
 * - a spool file (`uploadFile`), for formats written anywhere (qcow2, VHDX, VDI, sparse VMDK,
 *   dynamic VHD): the image is built in a temporary local file and uploaded when complete.
 *
 * Part size: 8 MiB, or larger when the expected size needs it to stay under S3's 10,000 parts;
 * parts in flight: 4, fewer for large parts, so buffers stay under ~160 MiB whatever the size.
 */
import { createReadStream } from 'node:fs';
import { PassThrough } from 'node:stream';
import { DiskError } from '../../core/errors.js';
import { GatheringSink, type CommittingSink } from '../sink.js';
import { s3Error, type S3Context } from './client.js';

const MIB = 1024 * 1024;
const MIN_PART = 8 * MIB;
/** under S3's 10,000 with room for an estimate that falls short */
const MAX_PARTS = 9000;
const BUFFER_BUDGET = 160 * MIB;

/** part size and parts in flight for an object of about `sizeHint` bytes */
export function uploadShape(sizeHint = 0): { partSize: number; queueSize: number } {
  const partSize = Math.max(MIN_PART, Math.ceil(sizeHint / MAX_PARTS / MIB) * MIB);
  return { partSize, queueSize: Math.max(1, Math.min(4, Math.floor(BUFFER_BUDGET / partSize))) };
}

type Upload = InstanceType<S3Context['storage']['Upload']>;

interface Target {
  ctx: S3Context;
  bucket: string;
  key: string;
  display: string;
}

/**
 * Abort what `upload` started, if it started a multipart upload. lib-storage aborts it itself
 * when a part fails, but only once and only when its feeder ends; asking again is harmless
 * (NoSuchUpload), and it is what guarantees no pending parts stay behind.
 */
async function abortPending(t: Target, upload: Upload): Promise<void> {
  const uploadId = (upload as unknown as { uploadId?: string }).uploadId;
  if (!uploadId) return;
  try {
    await t.ctx.client.send(new t.ctx.s3.AbortMultipartUploadCommand({ Bucket: t.bucket, Key: t.key, UploadId: uploadId }));
  } catch (err) {
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
    if (e.name === 'NoSuchUpload' || e.$metadata?.httpStatusCode === 404) return;
    throw s3Error(err, t.display, `AbortMultipartUpload ${uploadId}`);
  }
}

export class S3UploadSink extends GatheringSink implements CommittingSink {
  private readonly body = new PassThrough({ highWaterMark: MIB });
  private readonly upload: Upload;
  private readonly finished: Promise<void>;
  private failure: DiskError | undefined;
  private state: 'open' | 'closed' | 'aborted' = 'open';
  /** bytes the server has acknowledged (progress) */
  uploaded = 0;

  constructor(
    private readonly t: Target,
    opts: { sizeHint?: number } = {},
  ) {
    super(t.display);
    const { partSize, queueSize } = uploadShape(opts.sizeHint);
    // a destroyed pipe reports its error to the Upload's reader; nobody else listens
    this.body.on('error', () => {});
    this.upload = new t.ctx.storage.Upload({ client: t.ctx.client, params: { Bucket: t.bucket, Key: t.key, Body: this.body }, partSize, queueSize, leavePartsOnError: false });
    this.upload.on('httpUploadProgress', (p) => (this.uploaded = p.loaded ?? this.uploaded));
    this.finished = this.upload.done().then(
      () => undefined,
      (err) => {
        this.failure ??= s3Error(err, t.display, 'upload');
      },
    );
  }

  protected async put(buf: Buffer): Promise<void> {
    if (this.state !== 'open') throw new DiskError('CLOSED', undefined, { path: this.name });
    if (this.failure) throw this.failure;
    // the pipe keeps the buffer until a part takes it; the caller reuses its own
    const ok = this.body.write(Buffer.from(buf));
    if (!ok) {
      let onDrain!: () => void;
      const drained = new Promise<void>((resolve) => {
        onDrain = resolve;
        this.body.once('drain', onDrain);
      });
      // a failed upload reads no more: stop waiting for a drain that will not come
      await Promise.race([drained, this.finished]);
      this.body.off('drain', onDrain);
      if (this.failure) throw this.failure;
    }
  }

  protected async sync(): Promise<void> {}

  /** end the stream and complete the upload: the object appears now */
  async close(): Promise<void> {
    if (this.state !== 'open') return;
    try {
      await this.flush();
    } catch (err) {
      await this.abort(err).catch(() => {});
      throw err;
    }
    this.state = 'closed';
    this.body.end();
    await this.finished;
    if (this.failure) {
      await abortPending(this.t, this.upload).catch(() => {});
      throw this.failure;
    }
  }

  /** drop everything: no object, no pending parts */
  async abort(reason?: unknown): Promise<void> {
    if (this.state === 'aborted') return;
    const wasClosed = this.state === 'closed';
    this.state = 'aborted';
    if (!wasClosed) this.body.destroy(reason instanceof Error ? reason : new Error('upload aborted'));
    await this.finished;
    await abortPending(this.t, this.upload);
  }
}

/** upload the local file `path` (`size` bytes) as the object, in parts; aborted on failure */
export async function uploadFile(t: Target, path: string, size: number, signal?: AbortSignal): Promise<void> {
  const { partSize, queueSize } = uploadShape(size);
  const body = createReadStream(path, { highWaterMark: MIB });
  const upload = new t.ctx.storage.Upload({ client: t.ctx.client, params: { Bucket: t.bucket, Key: t.key, Body: body, ContentLength: size }, partSize, queueSize, leavePartsOnError: false });
  const onAbort = () => body.destroy(new Error('upload cancelled'));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await upload.done();
  } catch (err) {
    body.destroy();
    await abortPending(t, upload).catch(() => {});
    throw signal?.aborted ? new DiskError('CANCELLED', undefined, { path: t.display }, { cause: err }) : s3Error(err, t.display, 'upload');
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
