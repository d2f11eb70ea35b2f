/**
 * A raw NBD client for tests that need to send what real clients never do (bad lengths,
 * options in odd orders, STARTTLS injection, extended headers) and a memory export backend.
 * Built on the protocol codec and the server's ByteReader; no outside tool involved.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { ByteReader } from '../../src/nbd/server/reader.js';
import { OptionReplyHeader, SimpleReply, StructuredChunkHeader, ExtendedChunkHeader } from '../../src/nbd/protocol/structs.js';
import { FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, Opt, Rep, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, EXTENDED_REPLY_MAGIC } from '../../src/nbd/protocol/constants.js';
import { encodeInfoRequest, encodeOption, encodeRequest, type NbdRequest } from '../../src/nbd/protocol/codec.js';
import type { BackendExtent, ExportBackend, ExportSpec } from '../../src/nbd/server/backend.js';

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface Chunk {
  magic: number;
  flags: number;
  type: number;
  cookie: bigint;
  offset?: bigint;
  payload: Buffer;
  /** simple replies: error */
  error?: number;
}

export class RawClient {
  reader: ByteReader;
  private closedP: Promise<void>;
  constructor(public socket: Duplex) {
    this.reader = new ByteReader(socket);
    socket.on('error', () => {});
    this.closedP = new Promise((r) => socket.once('close', () => r()));
  }

  static async connect(address: { socket: string } | { host: string; port: number }): Promise<RawClient> {
    const s = 'socket' in address ? net.connect(address.socket) : net.connect(address.port, address.host);
    await new Promise<void>((resolve, reject) => {
      s.once('connect', () => resolve());
      s.once('error', reject);
    });
    return new RawClient(s);
  }

  /** read the greeting and answer with fixed-newstyle + no-zeroes */
  async start(clientFlags = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES): Promise<number> {
    const g = await this.reader.read(18);
    this.send(Buffer.from([(clientFlags >>> 24) & 255, (clientFlags >>> 16) & 255, (clientFlags >>> 8) & 255, clientFlags & 255]));
    return g.readUInt16BE(16);
  }

  send(b: Buffer): void {
    this.socket.write(b);
  }

  async readOptionReply(): Promise<OptionReply> {
    const h = OptionReplyHeader.decode(await this.reader.read(OptionReplyHeader.size));
    return { option: h.option, type: h.replyType, data: await this.reader.read(h.length) };
  }

  /** send an option and collect replies up to the final one (ACK or an error) */
  async option(option: number, data: Buffer = Buffer.alloc(0)): Promise<OptionReply[]> {
    this.send(encodeOption(option, data));
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.readOptionReply();
      out.push(r);
      if (r.type === Rep.ACK || r.type >= 0x80000000) return out;
    }
  }

  async go(name = '', infos: number[] = []): Promise<OptionReply[]> {
    return this.option(Opt.GO, encodeInfoRequest(name, infos));
  }

  request(r: Partial<NbdRequest> & { type: number }, extended = false, payload?: Buffer): void {
    const full: NbdRequest = { flags: 0, cookie: 1n, offset: 0n, length: 0n, ...r };
    this.send(payload ? Buffer.concat([encodeRequest(full, extended), payload]) : encodeRequest(full, extended));
  }

  /** read a simple reply header, a structured chunk or an extended chunk (payload included) */
  async readReply(readLength = 0): Promise<Chunk> {
    const m = (await this.reader.read(4)).readUInt32BE(0);
    if (m === SIMPLE_REPLY_MAGIC) {
      const rest = await this.reader.read(12);
      const b = Buffer.concat([Buffer.from([0x67, 0x44, 0x66, 0x98]), rest]);
      const r = SimpleReply.decode(b);
      const payload = r.error === 0 && readLength ? await this.reader.read(readLength) : Buffer.alloc(0);
      return { magic: m, flags: 0, type: 0, cookie: r.cookie, error: r.error, payload };
    }
    if (m === STRUCTURED_REPLY_MAGIC) {
      const rest = await this.reader.read(16);
      const h = StructuredChunkHeader.decode(Buffer.concat([Buffer.from([0x66, 0x8e, 0x33, 0xef]), rest]));
      return { magic: m, flags: h.flags, type: h.type, cookie: h.cookie, payload: await this.reader.read(h.length) };
    }
    if (m === EXTENDED_REPLY_MAGIC) {
      const rest = await this.reader.read(28);
      const h = ExtendedChunkHeader.decode(Buffer.concat([Buffer.from([0x6e, 0x8a, 0x27, 0x8c]), rest]));
      return { magic: m, flags: h.flags, type: h.type, cookie: h.cookie, offset: h.offset, payload: await this.reader.read(Number(h.length)) };
    }
    throw new Error(`unexpected reply magic 0x${m.toString(16)}`);
  }

  /** client side of STARTTLS's TLS handshake */
  async upgrade(opts: tls.ConnectionOptions): Promise<void> {
    this.reader.detach();
    const s = tls.connect({ ...opts, socket: this.socket as net.Socket });
    await new Promise<void>((resolve, reject) => {
      s.once('secureConnect', () => resolve());
      s.once('error', reject);
    });
    this.socket = s;
    s.on('error', () => {});
    this.reader = new ByteReader(s);
    this.closedP = new Promise((r) => s.once('close', () => r()));
  }

  /** resolves when the server hung up (or after `ms`: then false) */
  async closedWithin(ms: number): Promise<boolean> {
    return Promise.race([this.closedP.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** an in-memory export: all data, or the extents a test gives */
export function memoryBackend(size: number, opts: { readOnly?: boolean; extents?: (offset: number, length: number) => BackendExtent[] } = {}): ExportBackend & { data: Buffer; flushes: number } {
  const data = Buffer.alloc(size);
  const b = {
    data,
    flushes: 0,
    size,
    readOnly: !!opts.readOnly,
    blockSizes: { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 },
    chainLength: 1,
    async read(offset: number, length: number) {
      return Buffer.from(data.subarray(offset, offset + length));
    },
    async write(offset: number, d: Buffer) {
      d.copy(data, offset);
    },
    async flush() {
      b.flushes++;
    },
    async blockStatus(offset: number, length: number): Promise<BackendExtent[]> {
      return opts.extents ? opts.extents(offset, length) : [{ offset, length, state: 'data' }];
    },
    async close() {},
  };
  return b;
}

export function memoryExport(name: string, backend: ExportBackend, description?: string): ExportSpec {
  return { name, description, open: async () => backend };
}
