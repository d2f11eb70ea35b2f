/**
 * One client connection: the state negotiated in the handshake, the socket (plain, then
 * perhaps TLS) and how replies are written. The handshake (handshake.ts) and the transmission
 * phase (transmission.ts) both work on this object.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type tls from 'node:tls';
import { BufferPool } from './buffers.js';
import { ByteReader } from './reader.js';
import type { ExportBackend } from './backend.js';
import type { Budget } from './limits.js';
import type { ExportTable } from './exports.js';
import type { Limits } from './limits.js';
import type { TlsMode } from './tls.js';

/** a metadata context: the two allocation ones, or a persistent dirty bitmap offered with -B NAME */
export type ContextKind = 'base:allocation' | 'qemu:allocation-depth' | `qemu:dirty-bitmap:${string}`;

export interface MetaSelection {
  exportName: string;
  contexts: { id: number; kind: ContextKind }[];
}

/** what every connection of one server shares */
export interface ServerContext {
  exports: ExportTable;
  tlsMode: TlsMode;
  tlsOptions?: tls.TLSSocketOptions;
  limits: Limits;
  /** offer NBD_OPT_EXTENDED_HEADERS */
  extendedHeaders: boolean;
  /** serve every export read-only */
  readOnly: boolean;
  /** more than one connection may use an export at once (CAN_MULTI_CONN is then worth advertising) */
  multiConn: boolean;
  shuttingDown: boolean;
  /** called for server-side events worth a log line */
  log?: (msg: string) => void;
  /** READ reply buffers shared by the connections (else each connection keeps its own) */
  buffers?: BufferPool;
}

export class Connection {
  socket: Duplex;
  reader: ByteReader;
  tls = false;
  clientFlags = 0;
  structured = false;
  extended = false;
  meta: MetaSelection | undefined;
  exportName: string | undefined;
  backend: ExportBackend | undefined;
  /** requests in flight (set in the transmission phase) */
  budget: Budget | undefined;
  /** exports the last LIST named: each adds one option to the allowance */
  listed = 0;
  /** in the transmission phase */
  transmitting = false;
  /** set once the socket is gone or being torn down */
  closing = false;
  /** READ reply buffers for reuse: the server's, or 8 MiB of its own (16 of nbdcopy's 256 KiB, twice) */
  readonly buffers: BufferPool;
  private readonly closedPromise: Promise<void>;
  private drainWait: Promise<void> | undefined;
  private closedResolve!: () => void;

  constructor(
    readonly raw: Socket,
    readonly ctx: ServerContext,
    readonly id: number,
  ) {
    this.socket = raw;
    this.buffers = ctx.buffers ?? new BufferPool(8 * 1024 * 1024, 4 * 1024 * 1024);
    this.reader = new ByteReader(raw);
    this.closedPromise = new Promise((r) => (this.closedResolve = r));
    raw.on('error', () => {});
    raw.on('close', () => {
      this.closing = true;
      this.closedResolve();
    });
  }

  get closed(): Promise<void> {
    return this.closedPromise;
  }

  /** forget everything negotiated (after STARTTLS: the CVE-2021-3716 rule) */
  resetNegotiation(): void {
    this.structured = false;
    this.extended = false;
    this.meta = undefined;
  }

  /** queue bytes on the socket; false once the socket is gone */
  send(...parts: Buffer[]): boolean {
    return this.sendThen(parts);
  }

  /**
   * queue bytes on the socket; `written` runs once the socket has handed them all to the kernel
   * (not at all when the socket is already gone: then false)
   */
  sendThen(parts: Buffer[], written?: () => void): boolean {
    if (this.closing || this.socket.destroyed) return false;
    const cb = written && ((err?: Error | null) => void (err || written()));
    if (parts.length === 1) {
      this.socket.write(parts[0]!, cb);
      return true;
    }
    this.socket.cork();
    for (let i = 0; i < parts.length - 1; i++) this.socket.write(parts[i]!);
    this.socket.write(parts[parts.length - 1]!, cb);
    this.socket.uncork();
    return true;
  }

  /**
   * Reply backpressure: resolves at once while less than `limit` bytes of replies wait in the
   * socket, else when it has drained (or closed). One shared wait per connection, however many
   * requests are held by it.
   */
  drained(limit: number): Promise<void> {
    const s = this.socket;
    if (s.destroyed || s.writableLength <= limit) return Promise.resolve();
    this.drainWait ??= new Promise<void>((resolve) => {
      const done = () => {
        s.off('drain', done);
        s.off('close', done);
        this.drainWait = undefined;
        resolve();
      };
      s.on('drain', done);
      s.on('close', done);
    });
    return this.drainWait;
  }

  /** hard close */
  destroy(): void {
    this.closing = true;
    this.socket.destroy();
    if (this.socket !== this.raw) this.raw.destroy();
  }

  /** orderly close: flush what is queued, TLS close_notify, then FIN */
  end(): void {
    this.closing = true;
    this.socket.end();
    setTimeout(() => this.destroy(), 2000).unref();
  }
}
