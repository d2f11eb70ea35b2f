/**
 * Bounds every client is held to (NOTES.md explains the numbers), the per-connection budget that
 * turns "too much in flight" into backpressure, and the map from vdkit errors to NBD error values.
 */
import { DiskError } from '../../core/errors.js';
import { MAX_PAYLOAD, NbdErr } from '../protocol/constants.js';

export interface Limits {
  /** a client must finish the handshake (reach GO/EXPORT_NAME) within this (ms) */
  handshakeMs: number;
  /** options per connection before the server hangs up */
  maxOptions: number;
  /** option data larger than this ends the connection (CVE-2017-15119) */
  maxOptionData: number;
  /** meta-context queries in one option (more: NBD_REP_ERR_TOO_BIG) */
  maxQueries: number;
  /** requests executing at once per connection; the next is not read until one finishes */
  maxInFlight: number;
  /** payload and read bytes held at once per connection */
  maxBytesInFlight: number;
  /** reply bytes queued on the socket beyond which a finished request keeps its slot until the client reads */
  maxQueuedReplies: number;
  /** a WRITE payload above MAX_PAYLOAD but below this is read and dropped (EINVAL, connection kept); above it the connection ends */
  maxSkip: number;
  /** extents per block-status chunk */
  maxExtents: number;
  /** bytes one BLOCK_STATUS request looks at (clients re-query from where the answer stopped) */
  maxStatusLength: number;
  /** kernel send buffer asked for on each client socket (SO_SNDBUF; 0 keeps the default): see send-buffer.ts */
  sendBuffer: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  handshakeMs: 10_000,
  maxOptions: 64,
  maxOptionData: 1024 * 1024,
  maxQueries: 64,
  maxInFlight: 16,
  maxBytesInFlight: 64 * 1024 * 1024,
  maxQueuedReplies: 8 * 1024 * 1024,
  maxSkip: 128 * 1024 * 1024,
  maxExtents: 128 * 1024,
  maxStatusLength: 1024 * 1024 * 1024,
  sendBuffer: 2 * 1024 * 1024,
});

/** counts requests and bytes in flight; acquire waits (so the caller stops reading) when full */
export class Budget {
  private count = 0;
  private bytes = 0;
  private waiters: (() => void)[] = [];
  constructor(
    private readonly maxCount: number,
    private readonly maxBytes: number,
  ) {}

  get inFlight(): number {
    return this.count;
  }

  /** wait until one more request of `bytes` fits (a request larger than the whole budget waits for an empty one) */
  async acquire(bytes: number): Promise<void> {
    const want = Math.min(bytes, this.maxBytes);
    while (this.count >= this.maxCount || (this.count > 0 && this.bytes + want > this.maxBytes)) {
      await new Promise<void>((r) => this.waiters.push(r));
    }
    this.count++;
    this.bytes += want;
  }

  /** wait until one more request may start (without taking the slot) */
  async room(): Promise<void> {
    while (this.count >= this.maxCount) await new Promise<void>((r) => this.waiters.push(r));
  }

  release(bytes: number): void {
    this.count--;
    this.bytes -= Math.min(bytes, this.maxBytes);
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }

  /** resolves when nothing is in flight */
  async idle(): Promise<void> {
    while (this.count > 0) await new Promise<void>((r) => this.waiters.push(r));
  }
}

/** the NBD error value for an error thrown by a backend */
export function nbdErrno(err: unknown): number {
  if (err instanceof DiskError) {
    switch (err.code) {
      case 'RDONLY':
      case 'CMPRDONLY':
      case 'PERMISSIONS':
        return NbdErr.EPERM;
      case 'INVAL':
      case 'OUTOFRANGE':
      case 'NOTSUPPORTED':
        return NbdErr.EINVAL;
      case 'NOSPACE':
      case 'TOOBIGFORFS':
        return NbdErr.ENOSPC;
      default:
        return NbdErr.EIO;
    }
  }
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') return NbdErr.ENOSPC;
  if (code === 'ENOMEM') return NbdErr.ENOMEM;
  return NbdErr.EIO;
}

export { MAX_PAYLOAD };
