/**
 * One client connection in the transmission phase: requests go out tagged with a cookie, replies
 * (simple or structured chunks, in any order) are matched back by it, so many requests are in
 * flight at once. The reply reader trusts nothing: a magic, cookie, chunk type, length or offset
 * that does not fit the request it answers ends the connection with a DiskError naming the field,
 * and every request still in flight fails with an error naming the server. A request is only
 * resolved by the server's reply, so a write is never reported done before it was acknowledged.
 */
import net from 'node:net';
import { DiskError, type ErrorCode } from '../../core/errors.js';
import { Cmd, MAX_STRING, NbdErr, ReplyFlag, ReplyType, SIMPLE_REPLY_MAGIC, STATE_HOLE, STRUCTURED_REPLY_MAGIC, nameOf } from '../protocol/constants.js';
import { encodeRequest } from '../protocol/codec.js';
import { BlockDescriptor, ErrorChunkHead, SimpleReply, StructuredChunkHeader } from '../protocol/structs.js';
import type { ByteReader } from '../protocol/reader.js';
import type { FileExtent } from '../../storage/holes.js';
import { Handshake, type ExportFacts } from './handshake.js';
import type { ClientTls } from './tls.js';
import type { NbdUri } from './uri.js';

export interface ConnectOptions {
  /** connect and finish the handshake within this (default 30 s) */
  handshakeTimeoutMs?: number;
  /** with requests in flight, a server silent for this long is taken as gone (default 120 s; 0: never) */
  idleTimeoutMs?: number;
  /** requests one connection keeps in flight (default 32) */
  maxInFlight?: number;
}

/** a BLOCK_STATUS reply we buffer: 2^20 extents (the spec's SHOULD-limit) and the context id */
const MAX_STATUS_PAYLOAD = 4 + (1 << 20) * BlockDescriptor.size;

interface Pending {
  type: number;
  offset: number;
  length: number;
  /** READ: where the data goes (length bytes) */
  into?: Buffer;
  /** READ under structured replies: bytes the chunks have covered */
  covered: number;
  /** BLOCK_STATUS: the extents, relative to nothing (absolute offsets) */
  extents?: FileExtent[];
  error?: DiskError;
  resolve: (v: FileExtent[] | undefined) => void;
  reject: (e: Error) => void;
}

const ERRNO_CODE: Record<number, ErrorCode> = {
  [NbdErr.EPERM]: 'FILENOPERMISSION',
  [NbdErr.EINVAL]: 'INVAL',
  [NbdErr.ENOSPC]: 'NOSPACE',
  [NbdErr.EOVERFLOW]: 'INVAL',
  [NbdErr.ENOTSUP]: 'NOTSUPPORTED',
};

export class NbdConnection {
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private dead: DiskError | undefined;
  private readonly waiters: (() => void)[] = [];
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly maxInFlight: number;
  private closing = false;

  private constructor(
    private readonly stream: net.Socket,
    private readonly reader: ByteReader,
    readonly facts: ExportFacts,
    readonly label: string,
    private readonly idleTimeoutMs: number,
    maxInFlight: number,
  ) {
    this.maxInFlight = maxInFlight;
    stream.setNoDelay?.(true);
    stream.on('error', () => {}); // the reader reports it
    void this.readLoop();
  }

  /** connect to `uri`'s server and negotiate its export */
  static async connect(uri: NbdUri, tls: ClientTls | undefined, opts: ConnectOptions = {}): Promise<NbdConnection> {
    const label = uri.display;
    const timeoutMs = opts.handshakeTimeoutMs ?? 30_000;
    const raw = uri.socket !== undefined ? net.connect({ path: uri.socket }) : net.connect({ host: uri.host, port: uri.port ?? 10809 });
    raw.setNoDelay(true);
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const connected = new Promise<void>((resolve, reject) => {
      raw.once('connect', resolve);
      raw.once('error', (err) => reject(new DiskError('FILEIO', `cannot connect to the NBD server: ${err.message}`, { path: label }, { cause: err })));
    });
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        reject(new DiskError('FILEIO', `the NBD handshake did not finish within ${timeoutMs} ms`, { path: label, field: 'handshakeTimeoutMs', found: timeoutMs }));
      }, timeoutMs);
    });
    try {
      const n = await Promise.race([
        (async () => {
          await connected;
          return new Handshake(raw, label, uri.exportName, tls).run();
        })(),
        deadline,
      ]);
      return new NbdConnection(n.stream, n.reader, n.facts, label, opts.idleTimeoutMs ?? 120_000, opts.maxInFlight ?? 32);
    } catch (err) {
      raw.destroy();
      if (timedOut || err instanceof DiskError) throw err;
      throw new DiskError('FILEIO', `NBD handshake failed: ${(err as Error).message}`, { path: label }, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }

  get inFlight(): number {
    return this.pending.size;
  }

  get alive(): boolean {
    return !this.dead;
  }

  /** the error that ended the connection, if it ended */
  get failure(): DiskError | undefined {
    return this.dead;
  }

  /**
   * Send one request and wait for its reply: READ fills `into`, BLOCK_STATUS resolves with the
   * extents (base:allocation: hole bit -> not data), everything else with undefined.
   */
  async request(type: number, flags: number, offset: number, length: number, payload?: Buffer, into?: Buffer): Promise<FileExtent[] | undefined> {
    while (!this.dead && this.pending.size >= this.maxInFlight) await new Promise<void>((r) => this.waiters.push(r));
    if (this.dead) throw this.dead;
    const cookie = this.nextCookie++;
    return new Promise((resolve, reject) => {
      this.pending.set(cookie, { type, offset, length, into, covered: 0, resolve, reject });
      const head = encodeRequest({ flags, type, cookie, offset: BigInt(offset), length: BigInt(length) });
      if (payload) {
        this.stream.cork();
        this.stream.write(head);
        this.stream.write(payload);
        this.stream.uncork();
      } else this.stream.write(head);
      this.armIdle();
    });
  }

  /** NBD_CMD_DISC once nothing is in flight, then close */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (!this.dead) {
      while (this.pending.size > 0 && !this.dead) await new Promise<void>((r) => this.waiters.push(r));
      if (!this.dead) this.stream.write(encodeRequest({ flags: 0, type: Cmd.DISC, cookie: 0n, offset: 0n, length: 0n }));
      this.kill(new DiskError('CLOSED', 'the NBD connection was closed', { path: this.label }));
    }
    this.stream.end();
    this.stream.destroySoon?.();
  }

  /** end the connection now; everything in flight fails with `err` */
  kill(err: DiskError): void {
    if (this.dead) return;
    this.dead = err;
    clearTimeout(this.idleTimer);
    if (!this.closing) this.stream.destroy();
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const w of this.waiters.splice(0)) w();
  }

  private armIdle(): void {
    if (!this.idleTimeoutMs) return;
    if (this.idleTimer) this.idleTimer.refresh();
    else {
      this.idleTimer = setTimeout(() => {
        if (this.pending.size > 0) this.kill(new DiskError('FILEIO', `the NBD server sent nothing for ${this.idleTimeoutMs} ms with ${this.pending.size} request(s) in flight`, { path: this.label, field: 'idleTimeoutMs' }));
      }, this.idleTimeoutMs);
      this.idleTimer.unref();
    }
  }

  private protocolError(message: string, struct: string, field: string, more: Record<string, unknown> = {}): DiskError {
    return new DiskError('FILEIO', `protocol error from the NBD server: ${message}`, { path: this.label, struct, field, ...more });
  }

  private async readLoop(): Promise<void> {
    try {
      for (;;) {
        const head = await this.reader.read(4);
        if (this.pending.size > 0) this.idleTimer?.refresh();
        const magic = head.readUInt32BE(0);
        if (magic === SIMPLE_REPLY_MAGIC) await this.simpleReply(Buffer.concat([head, await this.reader.read(SimpleReply.size - 4)]));
        else if (magic === STRUCTURED_REPLY_MAGIC) await this.chunk(Buffer.concat([head, await this.reader.read(StructuredChunkHeader.size - 4)]));
        else throw this.protocolError('a reply with an unknown magic', 'NbdSimpleReply', 'magic', { found: `0x${magic.toString(16)}` });
      }
    } catch (err) {
      const e =
        this.closing || this.dead
          ? (this.dead ?? new DiskError('CLOSED', undefined, { path: this.label }))
          : err instanceof DiskError && err.details.path === this.label
            ? err
            : new DiskError('FILEIO', `the connection to the NBD server was lost${this.pending.size ? ` with ${this.pending.size} request(s) in flight` : ''}: ${(err as Error).message}`, { path: this.label }, { cause: err });
      this.kill(e);
    }
  }

  private take(cookie: bigint, struct: string): Pending {
    const p = this.pending.get(cookie);
    if (!p) throw this.protocolError('a reply to a request that is not in flight', struct, 'cookie', { found: cookie });
    return p;
  }

  private settle(cookie: bigint, p: Pending): void {
    this.pending.delete(cookie);
    for (const w of this.waiters.splice(0)) w();
    if (p.error) return p.reject(p.error);
    if (p.type === Cmd.READ && p.covered !== p.length) {
      return p.reject(this.protocolError(`the READ reply covered ${p.covered} of ${p.length} bytes`, 'NbdStructuredChunk', 'length', { expected: p.length, found: p.covered }));
    }
    if (p.type === Cmd.BLOCK_STATUS && !p.extents?.length) return p.reject(this.protocolError('BLOCK_STATUS reply without extents', 'NbdStructuredChunk', 'type'));
    p.resolve(p.extents);
  }

  private errorFor(p: Pending, error: number, message?: string): DiskError {
    const name = nameOf(NbdErr, error);
    return new DiskError(ERRNO_CODE[error] ?? 'FILEIO', `the NBD server failed ${nameOf(Cmd, p.type)} of ${p.length} bytes at ${p.offset}: ${name}${message ? ` (${message})` : ''}`, { path: this.label, offset: p.offset, length: p.length, found: name });
  }

  private async simpleReply(buf: Buffer): Promise<void> {
    const r = SimpleReply.decode(buf, 0, this.label);
    const p = this.take(r.cookie, 'NbdSimpleReply');
    if (p.type === Cmd.BLOCK_STATUS) throw this.protocolError('a simple reply to BLOCK_STATUS', 'NbdSimpleReply', 'magic');
    if (r.error !== 0) p.error = this.errorFor(p, r.error);
    else if (p.type === Cmd.READ) {
      // the data follows: exactly the length we asked for
      const data = await this.reader.read(p.length);
      data.copy(p.into!, 0);
      p.covered = p.length;
    }
    this.settle(r.cookie, p);
  }

  private async chunk(buf: Buffer): Promise<void> {
    const h = StructuredChunkHeader.decode(buf, 0, this.label);
    const p = this.take(h.cookie, 'NbdStructuredChunk');
    const bad = (message: string, field: string, more: Record<string, unknown> = {}) => this.protocolError(message, 'NbdStructuredChunk', field, { type: nameOf(ReplyType, h.type), ...more });
    const isRead = p.type === Cmd.READ;
    switch (h.type) {
      case ReplyType.NONE:
        if (h.length !== 0) throw bad('a NONE chunk with a payload', 'length', { expected: 0, found: h.length });
        if (!(h.flags & ReplyFlag.DONE)) throw bad('a NONE chunk without the DONE flag', 'flags', { found: h.flags });
        break;
      case ReplyType.OFFSET_DATA: {
        if (!isRead) throw bad(`an OFFSET_DATA chunk answering ${nameOf(Cmd, p.type)}`, 'type');
        if (h.length <= 8 || h.length - 8 > p.length) throw bad('OFFSET_DATA length outside the request', 'length', { expected: `9..${p.length + 8}`, found: h.length });
        const at = this.chunkOffset((await this.reader.read(8)).readBigUInt64BE(0), h.length - 8, p, bad);
        const data = await this.reader.read(h.length - 8);
        data.copy(p.into!, at);
        this.cover(p, h.length - 8, bad);
        break;
      }
      case ReplyType.OFFSET_HOLE: {
        if (!isRead) throw bad(`an OFFSET_HOLE chunk answering ${nameOf(Cmd, p.type)}`, 'type');
        if (h.length !== 12) throw bad('OFFSET_HOLE payload is not 12 bytes', 'length', { expected: 12, found: h.length });
        const b = await this.reader.read(12);
        const len = b.readUInt32BE(8);
        if (len === 0) throw bad('an OFFSET_HOLE of length 0', 'hole length', { found: 0 });
        const at = this.chunkOffset(b.readBigUInt64BE(0), len, p, bad);
        p.into!.fill(0, at, at + len);
        this.cover(p, len, bad);
        break;
      }
      case ReplyType.BLOCK_STATUS: {
        if (p.type !== Cmd.BLOCK_STATUS) throw bad(`a BLOCK_STATUS chunk answering ${nameOf(Cmd, p.type)}`, 'type');
        if (h.length < 4 + BlockDescriptor.size || (h.length - 4) % BlockDescriptor.size !== 0 || h.length > MAX_STATUS_PAYLOAD) throw bad('BLOCK_STATUS payload length is not 4 + 8n (n from 1 to 2^20)', 'length', { found: h.length });
        const b = await this.reader.read(h.length);
        const id = b.readUInt32BE(0);
        if (id !== this.facts.allocationContext) throw bad('BLOCK_STATUS for a context we did not select', 'context id', { expected: this.facts.allocationContext, found: id });
        if (p.extents?.length) throw bad('a second BLOCK_STATUS chunk for base:allocation', 'context id', { found: id });
        const out: FileExtent[] = [];
        let at = p.offset;
        for (let i = 4; i < b.length; i += BlockDescriptor.size) {
          const d = BlockDescriptor.decode(b, i, this.label);
          if (d.length === 0) throw bad('an extent of length 0', 'extent length', { found: 0 });
          // extents past the request are allowed for the last one; keep what was asked
          const len = Math.min(d.length, p.offset + p.length - at);
          if (len <= 0) break;
          const data = (d.status & STATE_HOLE) === 0;
          const last = out[out.length - 1];
          if (last && last.data === data) last.length += len;
          else out.push({ offset: at, length: len, data });
          at += len;
        }
        p.extents = out;
        break;
      }
      default: {
        if (!(h.type & 0x8000)) throw bad(`an unknown chunk type ${h.type}`, 'type', { found: h.type });
        // ERROR, ERROR_OFFSET and error types we do not know: error value, message length, message
        const max = ErrorChunkHead.size + MAX_STRING + 8;
        if (h.length < ErrorChunkHead.size || h.length > max) throw bad(`error chunk payload of ${h.length} bytes`, 'length', { expected: `${ErrorChunkHead.size}..${max}`, found: h.length });
        const b = await this.reader.read(h.length);
        const e = ErrorChunkHead.decode(b, 0, this.label);
        if (e.messageLength > h.length - ErrorChunkHead.size) throw this.protocolError('error message runs past the chunk', 'NbdErrorChunk', 'messageLength', { expected: `<= ${h.length - ErrorChunkHead.size}`, found: e.messageLength });
        if (e.error === 0) throw this.protocolError('an error chunk with error 0', 'NbdErrorChunk', 'error', { found: 0 });
        const text = b
          .subarray(ErrorChunkHead.size, ErrorChunkHead.size + e.messageLength)
          .toString('utf8')
          .replace(/[\u0000-\u001f\u007f]/g, ' ')
          .slice(0, 512);
        p.error ??= this.errorFor(p, e.error, text || undefined);
      }
    }
    if (h.flags & ReplyFlag.DONE) this.settle(h.cookie, p);
  }

  /** a chunk's offset as an index into the request's buffer, after checking it lies inside */
  private chunkOffset(offset: bigint, length: number, p: Pending, bad: (m: string, f: string, more?: Record<string, unknown>) => DiskError): number {
    const start = BigInt(p.offset);
    if (offset < start || offset + BigInt(length) > start + BigInt(p.length)) {
      throw bad('chunk offset outside the request', 'offset', { expected: `${p.offset}..${p.offset + p.length}`, found: offset });
    }
    return Number(offset - start);
  }

  private cover(p: Pending, n: number, bad: (m: string, f: string, more?: Record<string, unknown>) => DiskError): void {
    p.covered += n;
    if (p.covered > p.length) throw bad('READ chunks overlap (more bytes than asked for)', 'offset', { expected: p.length, found: p.covered });
  }
}
