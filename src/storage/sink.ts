/**
 * Sequential byte sinks: where a stream-shaped output (streamOptimized VMDK, raw to stdout) goes.
 * A sink only appends, so the same writer serves a regular file and a pipe. Small appends are
 * gathered into one buffer and handed on in ~1 MiB pieces, because a pipe or a file takes a few
 * large writes much faster than thousands of 512-byte ones.
 */
import type { Writable } from 'node:stream';
import { DiskError, fromSystemError } from '../core/errors.js';
import type { ByteStore } from './store.js';

export interface ByteSink {
  /** a name for messages: the path, or "-" for stdout */
  readonly name: string;
  /** bytes appended so far */
  readonly position: number;
  /** append; once the promise resolves the sink no longer needs `buf` */
  append(buf: Buffer): Promise<void>;
  /** hand every gathered byte on; for files also fdatasync */
  flush(): Promise<void>;
  close(): Promise<void>;
}

const GATHER = 1024 * 1024;

export abstract class GatheringSink implements ByteSink {
  position = 0;
  /** small appends are copied here, so callers may reuse their buffers once append resolves */
  private readonly gather = Buffer.allocUnsafeSlow(GATHER);
  private gathered = 0;
  constructor(readonly name: string) {}

  async append(buf: Buffer): Promise<void> {
    if (buf.length === 0) return;
    this.position += buf.length;
    if (this.gathered + buf.length <= GATHER) {
      buf.copy(this.gather, this.gathered);
      this.gathered += buf.length;
      if (this.gathered === GATHER) await this.drain();
      return;
    }
    await this.drain();
    if (buf.length >= GATHER) return this.put(buf);
    buf.copy(this.gather, 0);
    this.gathered = buf.length;
  }

  private async drain(): Promise<void> {
    if (this.gathered === 0) return;
    const n = this.gathered;
    this.gathered = 0;
    await this.put(this.gather.subarray(0, n));
  }

  async flush(): Promise<void> {
    await this.drain();
    await this.sync();
  }

  protected abstract put(buf: Buffer): Promise<void>;
  protected abstract sync(): Promise<void>;
  abstract close(): Promise<void>;
}

/**
 * A store written from its start (a new file of a namespace), or from `start` (a member inside
 * an archive being written): flush is the store's flush, so the namespace's cache mode decides
 * whether it syncs.
 */
export class StoreSink extends GatheringSink {
  private written = 0;
  constructor(
    private readonly store: ByteStore,
    private readonly start = 0,
  ) {
    super(store.name);
  }

  protected async put(buf: Buffer): Promise<void> {
    await this.store.write(this.start + this.written, buf);
    this.written += buf.length;
  }

  protected sync(): Promise<void> {
    return this.store.flush();
  }

  async close(): Promise<void> {
    await this.store.close().catch(() => {});
  }
}

/** A Node stream such as process.stdout (a pipe or a terminal): backpressure is honoured. */
export class StreamSink extends GatheringSink {
  private failed: Error | undefined;
  constructor(
    name: string,
    private readonly out: Writable,
  ) {
    super(name);
    out.on('error', (err) => (this.failed ??= err));
  }

  protected put(buf: Buffer): Promise<void> {
    if (this.failed) return Promise.reject(this.wrap(this.failed));
    return new Promise((resolve, reject) => {
      const ok = this.out.write(buf, (err) => {
        if (err) reject(this.wrap(err));
        else if (ok) resolve();
      });
      if (!ok) {
        const onDrain = () => {
          this.out.off('error', onError);
          resolve();
        };
        const onError = (err: Error) => {
          this.out.off('drain', onDrain);
          reject(this.wrap(err));
        };
        this.out.once('drain', onDrain);
        this.out.once('error', onError);
      }
    });
  }

  private wrap(err: Error): DiskError {
    if ((err as NodeJS.ErrnoException).code === 'EPIPE') return new DiskError('CANCELLED', 'the reader of the output went away', { path: this.name }, { cause: err });
    return fromSystemError(err, this.name);
  }

  protected async sync(): Promise<void> {}

  async close(): Promise<void> {}
}

/**
 * A sink whose output appears whole when `close()` resolves and not at all after `abort()`
 * (an S3 multipart upload): the writer closes it only after its last byte, and aborts it on any
 * failure or cancel, so no half-written target is ever visible under its name.
 */
export interface CommittingSink extends ByteSink {
  abort(reason?: unknown): Promise<void>;
}
