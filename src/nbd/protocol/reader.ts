/**
 * Reads exact byte counts from a stream ("need N bytes" states): a 'data' event is never assumed
 * to be one message. Shared by the server (reading a client) and the client (reading a server);
 * `peer` names the other end in the error an end of stream raises. It pauses the stream once
 * more than `highWater` bytes wait unread beyond what a pending read needs, so a peer that sends
 * faster than we work is throttled by TCP instead of buffered without end.
 */
import type { Duplex } from 'node:stream';
import { ChunkQueue } from '../../binary/chunk-queue.js';
import { DiskError } from '../../core/errors.js';

export class ConnectionClosed extends DiskError {
  constructor(what: string) {
    super('FILEIO', `connection closed ${what}`);
  }
}

export class ByteReader {
  private readonly queue = new ChunkQueue();
  private want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private ended: Error | undefined;
  private paused = false;
  private readonly onData = (b: Buffer) => this.push(b);
  private readonly onEnd = () => this.fail(new ConnectionClosed(`by the ${this.peer}`));
  private readonly onError = (e: Error) => this.fail(e);

  constructor(
    private readonly stream: Duplex,
    private readonly highWater = 1024 * 1024,
    private readonly peer = 'client',
  ) {
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('close', this.onEnd);
    stream.on('error', this.onError);
  }

  /** bytes received but not yet read */
  get pending(): number {
    return this.queue.length;
  }

  /** true while a read waits for bytes that have not come */
  get waiting(): boolean {
    return this.want !== undefined;
  }

  /** stop listening (before handing the socket to TLS); the stream is left paused */
  detach(): void {
    this.stream.off('data', this.onData);
    this.stream.off('end', this.onEnd);
    this.stream.off('close', this.onEnd);
    this.stream.off('error', this.onError);
    this.stream.pause();
  }

  read(n: number): Promise<Buffer> {
    if (this.want) return Promise.reject(new DiskError('INTERNAL', 'two reads at once on one connection'));
    if (this.queue.length >= n) return Promise.resolve(this.take(n));
    if (this.ended) return Promise.reject(this.ended);
    if (this.paused) this.resume();
    return new Promise((resolve, reject) => {
      this.want = { n, resolve, reject };
    });
  }

  /** read and drop `n` bytes without holding more than a chunk of them */
  async skip(n: number): Promise<void> {
    while (n > 0) {
      const step = Math.min(n, this.highWater);
      await this.read(step);
      n -= step;
    }
  }

  private push(b: Buffer): void {
    this.queue.push(b);
    const w = this.want;
    if (w && this.queue.length >= w.n) {
      this.want = undefined;
      w.resolve(this.take(w.n));
    }
    if (!this.paused && this.queue.length > this.highWater + (this.want?.n ?? 0)) {
      this.paused = true;
      this.stream.pause();
    }
  }

  private resume(): void {
    this.paused = false;
    this.stream.resume();
  }

  private take(n: number): Buffer {
    const out = this.queue.take(n);
    if (this.paused && this.queue.length <= this.highWater) this.resume();
    return out;
  }

  private fail(e: Error): void {
    if (this.ended) return;
    this.ended = e;
    const w = this.want;
    if (w) {
      this.want = undefined;
      w.reject(e);
    }
  }
}
