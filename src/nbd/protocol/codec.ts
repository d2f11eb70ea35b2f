/**
 * Encoders and decoders for NBD messages, built on the field tables of structs.ts. No sockets:
 * everything takes and returns Buffers, so the server, the fuzzer and the unit tests share it.
 * Decoders of option data throw DiskError INVAL naming the field; the handshake turns that into
 * NBD_REP_ERR_INVALID and keeps the connection.
 */
import { DiskError } from '../../core/errors.js';
import { FLAG_NO_ZEROES, Info, MAX_STRING, OPTION_REPLY_MAGIC, REQUEST_MAGIC, EXTENDED_REQUEST_MAGIC, ReplyFlag, ReplyType, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, EXTENDED_REPLY_MAGIC, IHAVEOPT, NBDMAGIC, FLAG_FIXED_NEWSTYLE } from './constants.js';
import { BlockDescriptor, BlockDescriptorExt, ErrorChunkHead, EXPORT_NAME_PADDING, ExportNameReply, ExtendedChunkHeader, ExtendedRequest, Greeting, InfoBlockSize, InfoExport, OptionHeader, OptionReplyHeader, Request, SimpleReply, StructuredChunkHeader } from './structs.js';

// ------------------------------------------------------------------ handshake, server side

export function encodeGreeting(handshakeFlags = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES): Buffer {
  return Greeting.encode({ passwd: NBDMAGIC, optMagic: IHAVEOPT, handshakeFlags });
}

export function encodeOptionReply(option: number, replyType: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const head = OptionReplyHeader.encode({ magic: OPTION_REPLY_MAGIC, option, replyType, length: data.length });
  return data.length ? Buffer.concat([head, data]) : head;
}

/** UTF-8 bytes of `text`, cut at MAX_STRING bytes on a character boundary */
export function wireString(text: string, max = MAX_STRING): Buffer {
  const b = Buffer.from(text, 'utf8');
  if (b.length <= max) return b;
  let end = max;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

/** client-supplied text echoed into a message is cut short (CVE-2020-10761) */
export function quoteName(name: string): string {
  return JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}...` : name);
}

/** NBD_REP_SERVER data: name length, name, description */
export function encodeServerEntry(name: string, description = ''): Buffer {
  const n = wireString(name);
  const d = wireString(description);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(n.length, 0);
  return Buffer.concat([len, n, d]);
}

export function encodeInfoExport(size: number, transmissionFlags: number): Buffer {
  return InfoExport.encode({ infoType: Info.EXPORT, size: BigInt(size), transmissionFlags });
}

export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  return InfoBlockSize.encode({ infoType: Info.BLOCK_SIZE, minimum, preferred, maximum });
}

/** NBD_INFO_NAME / NBD_INFO_DESCRIPTION */
export function encodeInfoString(infoType: number, text: string): Buffer {
  const t = Buffer.alloc(2);
  t.writeUInt16BE(infoType, 0);
  return Buffer.concat([t, wireString(text)]);
}

export function encodeMetaContext(id: number, name: string): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(id, 0);
  return Buffer.concat([b, wireString(name)]);
}

export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const head = ExportNameReply.encode({ size: BigInt(size), transmissionFlags });
  return noZeroes ? head : Buffer.concat([head, Buffer.alloc(EXPORT_NAME_PADDING)]);
}

// ------------------------------------------------------------------ option data, server side

/** a cursor over option data that refuses to run past its end */
class OptionData {
  private at = 0;
  constructor(
    private readonly data: Buffer,
    private readonly what: string,
  ) {}
  u32(field: string): number {
    this.need(4, field);
    const v = this.data.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }
  u16(field: string): number {
    this.need(2, field);
    const v = this.data.readUInt16BE(this.at);
    this.at += 2;
    return v;
  }
  string(length: number, field: string): string {
    if (length > MAX_STRING) throw new DiskError('INVAL', `${field} is longer than ${MAX_STRING} bytes`, { struct: this.what, field, found: length });
    this.need(length, field);
    const b = this.data.subarray(this.at, this.at + length);
    this.at += length;
    if (b.includes(0)) throw new DiskError('INVAL', `${field} holds a NUL byte`, { struct: this.what, field });
    return b.toString('utf8');
  }
  get left(): number {
    return this.data.length - this.at;
  }
  private need(n: number, field: string): void {
    if (this.data.length - this.at < n) throw new DiskError('INVAL', `${field} runs past the end of the option data`, { struct: this.what, field, expected: n, found: this.data.length - this.at });
  }
}

export interface InfoRequest {
  name: string;
  /** NBD_INFO_* types the client asked for */
  infos: number[];
}

/** NBD_OPT_INFO / NBD_OPT_GO data: u32 name length, name, u16 count, count x u16 */
export function decodeInfoRequest(data: Buffer): InfoRequest {
  const c = new OptionData(data, 'NBD_OPT_GO');
  const name = c.string(c.u32('name length'), 'export name');
  const count = c.u16('information request count');
  if (c.left !== count * 2) throw new DiskError('INVAL', 'information request count does not match the option length', { struct: 'NBD_OPT_GO', field: 'information request count', expected: c.left / 2, found: count });
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(c.u16('information request'));
  return { name, infos };
}

export interface MetaContextRequest {
  name: string;
  queries: string[];
}

/** NBD_OPT_LIST/SET_META_CONTEXT data: u32 name length, name, u32 count, count x (u32 length, query) */
export function decodeMetaContextRequest(data: Buffer, maxQueries: number): MetaContextRequest {
  const c = new OptionData(data, 'NBD_OPT_SET_META_CONTEXT');
  const name = c.string(c.u32('name length'), 'export name');
  const count = c.u32('query count');
  // every query takes at least its 4-byte length: a count beyond that is a lie, caught before looping
  if (count * 4 > c.left) throw new DiskError('INVAL', 'query count runs past the end of the option data', { struct: 'NBD_OPT_SET_META_CONTEXT', field: 'query count', found: count });
  if (count > maxQueries) throw new DiskError('NOSPACE', `more than ${maxQueries} queries`, { struct: 'NBD_OPT_SET_META_CONTEXT', field: 'query count', found: count });
  const queries: string[] = [];
  for (let i = 0; i < count; i++) queries.push(c.string(c.u32('query length'), 'query'));
  if (c.left !== 0) throw new DiskError('INVAL', 'bytes left over after the last query', { struct: 'NBD_OPT_SET_META_CONTEXT', field: 'length', found: c.left });
  return { name, queries };
}

// ------------------------------------------------------------------ transmission, server side

export interface NbdRequest {
  flags: number;
  type: number;
  /** opaque; echoed back unchanged */
  cookie: bigint;
  offset: bigint;
  /** payload length for WRITE, effect length otherwise */
  length: bigint;
}

/** decode a request header (compact: 28 bytes, extended: 32); wrong magic -> DiskError */
export function decodeRequest(buf: Buffer, extended: boolean): NbdRequest {
  if (extended) {
    const r = ExtendedRequest.decode(buf, 0, 'nbd');
    return { flags: r.flags, type: r.type, cookie: r.cookie, offset: r.offset, length: r.length };
  }
  const r = Request.decode(buf, 0, 'nbd');
  return { flags: r.flags, type: r.type, cookie: r.cookie, offset: r.offset, length: BigInt(r.length) };
}

export function encodeSimpleReply(error: number, cookie: bigint): Buffer {
  return SimpleReply.encode({ magic: SIMPLE_REPLY_MAGIC, error, cookie });
}

/** the reply flavour negotiated on a connection */
export type ReplyMode = 'simple' | 'structured' | 'extended';

export interface ChunkTarget {
  mode: Exclude<ReplyMode, 'simple'>;
  cookie: bigint;
  /** the request's offset (extended headers echo it in every chunk) */
  offset: bigint;
}

/** a chunk header; the payload is sent right after it */
export function encodeChunkHeader(t: ChunkTarget, type: number, payloadLength: number, done: boolean): Buffer {
  const flags = done ? ReplyFlag.DONE : 0;
  if (t.mode === 'extended') return ExtendedChunkHeader.encode({ magic: EXTENDED_REPLY_MAGIC, flags, type, cookie: t.cookie, offset: t.offset, length: BigInt(payloadLength) });
  return StructuredChunkHeader.encode({ magic: STRUCTURED_REPLY_MAGIC, flags, type, cookie: t.cookie, length: payloadLength });
}

export function encodeNoneChunk(t: ChunkTarget): Buffer {
  return encodeChunkHeader(t, ReplyType.NONE, 0, true);
}

/** OFFSET_DATA: header and the 8-byte offset; the data buffer follows on the wire */
export function encodeDataChunkHead(t: ChunkTarget, offset: number, dataLength: number, done: boolean): Buffer {
  const off = Buffer.alloc(8);
  off.writeBigUInt64BE(BigInt(offset), 0);
  return Buffer.concat([encodeChunkHeader(t, ReplyType.OFFSET_DATA, 8 + dataLength, done), off]);
}

export function encodeHoleChunk(t: ChunkTarget, offset: number, length: number, done: boolean): Buffer {
  const p = Buffer.alloc(12);
  p.writeBigUInt64BE(BigInt(offset), 0);
  p.writeUInt32BE(length, 8);
  return Buffer.concat([encodeChunkHeader(t, ReplyType.OFFSET_HOLE, 12, done), p]);
}

export function encodeErrorChunk(t: ChunkTarget, error: number, message = ''): Buffer {
  const m = wireString(message);
  const head = ErrorChunkHead.encode({ error, messageLength: m.length });
  return Buffer.concat([encodeChunkHeader(t, ReplyType.ERROR, head.length + m.length, true), head, m]);
}

export interface StatusExtent {
  length: number;
  status: number;
}

/** one context's extents: BLOCK_STATUS (compact lengths) or BLOCK_STATUS_EXT under extended headers */
export function encodeBlockStatusChunk(t: ChunkTarget, contextId: number, extents: readonly StatusExtent[], done: boolean): Buffer {
  if (t.mode === 'extended') {
    const body = Buffer.alloc(8 + extents.length * BlockDescriptorExt.size);
    body.writeUInt32BE(contextId, 0);
    body.writeUInt32BE(extents.length, 4);
    extents.forEach((e, i) => BlockDescriptorExt.encode({ length: BigInt(e.length), status: BigInt(e.status) }, body, 8 + i * BlockDescriptorExt.size));
    return Buffer.concat([encodeChunkHeader(t, ReplyType.BLOCK_STATUS_EXT, body.length, done), body]);
  }
  const body = Buffer.alloc(4 + extents.length * BlockDescriptor.size);
  body.writeUInt32BE(contextId, 0);
  extents.forEach((e, i) => BlockDescriptor.encode({ length: e.length, status: e.status }, body, 4 + i * BlockDescriptor.size));
  return Buffer.concat([encodeChunkHeader(t, ReplyType.BLOCK_STATUS, body.length, done), body]);
}

// ------------------------------------------------------------------ client side (tests, fuzzer, a later client)

export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([OptionHeader.encode({ magic: IHAVEOPT, option, length: data.length }), data]);
}

export function encodeInfoRequest(name: string, infos: readonly number[] = []): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.length + 2 + infos.length * 2);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + n.length + i * 2));
  return b;
}

export function encodeMetaContextRequest(name: string, queries: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v, 0);
    return b;
  };
  const n = Buffer.from(name, 'utf8');
  parts.push(u32(n.length), n, u32(queries.length));
  for (const q of queries) {
    const qb = Buffer.from(q, 'utf8');
    parts.push(u32(qb.length), qb);
  }
  return Buffer.concat(parts);
}

export function encodeRequest(r: NbdRequest, extended = false): Buffer {
  if (extended) return ExtendedRequest.encode({ magic: EXTENDED_REQUEST_MAGIC, ...r });
  return Request.encode({ magic: REQUEST_MAGIC, flags: r.flags, type: r.type, cookie: r.cookie, offset: r.offset, length: Number(r.length) });
}
