/**
 * The client side of the fixed-newstyle handshake: greeting, client flags, STARTTLS when TLS
 * is wanted, STRUCTURED_REPLY, SET_META_CONTEXT base:allocation, then GO asking for the block
 * sizes (EXPORT_NAME when the server is too old for GO). Every length the server sends is
 * checked against what the option can carry before anything is read or allocated by it.
 */
import type { Socket } from 'node:net';
import { DiskError } from '../../core/errors.js';
import { toSafeNumber, isPowerOfTwo } from '../../core/ints.js';
import { CONTEXT_BASE_ALLOCATION, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, Info, MAX_PAYLOAD, MAX_STRING, Opt, Rep, TFlag, nameOf } from '../protocol/constants.js';
import { encodeInfoRequest, encodeMetaContextRequest, encodeOption } from '../protocol/codec.js';
import { ClientFlags, EXPORT_NAME_PADDING, ExportNameReply, Greeting, InfoBlockSize, InfoExport, OptionReplyHeader } from '../protocol/structs.js';
import { ByteReader } from '../protocol/reader.js';
import { upgradeClient, type ClientTls } from './tls.js';

/** what the server told us about the export, and how the connection talks */
export interface ExportFacts {
  size: number;
  /** transmission flags (TFlag) */
  flags: number;
  /** NBD_INFO_BLOCK_SIZE, or 1 / 4096 / MAX_PAYLOAD when the server sent none */
  minBlock: number;
  preferredBlock: number;
  /** largest READ/WRITE payload we send: the server's maximum, capped at MAX_PAYLOAD */
  maxPayload: number;
  structured: boolean;
  /** the id of base:allocation when the server selected it (BLOCK_STATUS allowed) */
  allocationContext?: number;
}

export interface Negotiated {
  stream: Socket;
  reader: ByteReader;
  facts: ExportFacts;
}

/** option replies we accept: the largest is an error message or a context name (4096) with its head */
const MAX_OPTION_REPLY = MAX_STRING + 64;
/** an old greeting: bytes 8..15 of an oldstyle handshake */
const OLDSTYLE_MAGIC = 0x00420281861253n;

interface OptionReply {
  replyType: number;
  data: Buffer;
}

export class Handshake {
  private reader: ByteReader;
  private stream: Socket;
  constructor(
    raw: Socket,
    private readonly label: string,
    private readonly exportName: string,
    private readonly tls: ClientTls | undefined,
  ) {
    this.stream = raw;
    this.reader = new ByteReader(raw, 1024 * 1024, 'server');
  }

  private fail(message: string, field: string, more: Record<string, unknown> = {}): DiskError {
    return new DiskError('FILEIO', message, { path: this.label, struct: 'NBD handshake', field, ...more });
  }

  private send(option: number, data?: Buffer): void {
    this.stream.write(encodeOption(option, data));
  }

  private async reply(option: number): Promise<OptionReply> {
    const h = OptionReplyHeader.decode(await this.reader.read(OptionReplyHeader.size), 0, this.label);
    if (h.option !== option) throw this.fail(`the server answered option ${nameOf(Opt, h.option)} to ${nameOf(Opt, option)}`, 'option', { expected: option, found: h.option });
    if (h.length > MAX_OPTION_REPLY) throw this.fail(`option reply of ${h.length} bytes (at most ${MAX_OPTION_REPLY} are accepted)`, 'length', { found: h.length });
    return { replyType: h.replyType, data: h.length ? await this.reader.read(h.length) : Buffer.alloc(0) };
  }

  /** an error reply as a DiskError; its message is the server's text, cut and made printable */
  private refused(option: number, r: OptionReply): DiskError {
    const text = r.data.subarray(0, 1024).toString('utf8').replace(/[\u0000-\u001f\u007f]/g, ' ').trim();
    const what = `${nameOf(Opt, option)} refused: ${nameOf(Rep, r.replyType)}${text ? ` (${text})` : ''}`;
    const details = { path: this.label, struct: 'NBD handshake', field: nameOf(Opt, option), found: nameOf(Rep, r.replyType) };
    if (r.replyType === Rep.ERR_UNKNOWN) return new DiskError('FILENOTFOUND', `the server has no export ${JSON.stringify(this.exportName)}: ${what}`, details);
    if (r.replyType === Rep.ERR_TLS_REQD) return new DiskError('FILENOPERMISSION', `the server requires TLS (use an nbds:// or nbds+unix:// URI): ${what}`, details);
    if (r.replyType === Rep.ERR_POLICY) return new DiskError('FILENOPERMISSION', what, details);
    return new DiskError('FILEIO', what, details);
  }

  private static isError(replyType: number): boolean {
    return (replyType & 0x80000000) !== 0;
  }

  async run(): Promise<Negotiated> {
    const greeting = await this.reader.read(Greeting.size);
    if (greeting.readBigUInt64BE(8) === OLDSTYLE_MAGIC) throw new DiskError('NOTSUPPORTED', 'the server speaks the oldstyle handshake, which this client does not', { path: this.label, struct: 'NbdGreeting', field: 'optMagic' });
    const g = Greeting.decode(greeting, 0, this.label);
    const fixed = (g.handshakeFlags & FLAG_FIXED_NEWSTYLE) !== 0;
    const noZeroes = (g.handshakeFlags & FLAG_NO_ZEROES) !== 0;
    this.stream.write(ClientFlags.encode({ clientFlags: (fixed ? FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? FLAG_C_NO_ZEROES : 0) }));
    if (!fixed) {
      if (this.tls) throw new DiskError('NOTSUPPORTED', 'the server does not speak fixed newstyle, so it cannot do TLS', { path: this.label, struct: 'NbdGreeting', field: 'handshakeFlags', found: g.handshakeFlags });
      return this.exportNameFallback(noZeroes, false, undefined);
    }
    if (this.tls) await this.startTls();

    this.send(Opt.STRUCTURED_REPLY);
    const sr = await this.reply(Opt.STRUCTURED_REPLY);
    const structured = sr.replyType === Rep.ACK;
    if (!structured && !Handshake.isError(sr.replyType)) throw this.fail(`unexpected reply ${nameOf(Rep, sr.replyType)} to STRUCTURED_REPLY`, 'replyType');

    let allocationContext: number | undefined;
    if (structured) allocationContext = await this.selectAllocation();

    this.send(Opt.GO, encodeInfoRequest(this.exportName, [Info.BLOCK_SIZE]));
    let exportInfo: { size: bigint; transmissionFlags: number } | undefined;
    let block: { minimum: number; preferred: number; maximum: number } | undefined;
    for (;;) {
      const r = await this.reply(Opt.GO);
      if (r.replyType === Rep.ACK) break;
      if (r.replyType === Rep.ERR_UNSUP) return this.exportNameFallback(noZeroes, structured, allocationContext);
      if (Handshake.isError(r.replyType)) throw this.refused(Opt.GO, r);
      if (r.replyType !== Rep.INFO) throw this.fail(`unexpected reply ${nameOf(Rep, r.replyType)} to GO`, 'replyType', { found: r.replyType });
      if (r.data.length < 2) throw this.fail('NBD_REP_INFO shorter than its type', 'length', { found: r.data.length });
      const type = r.data.readUInt16BE(0);
      if (type === Info.EXPORT) {
        if (r.data.length !== InfoExport.size) throw new DiskError('FILEIO', 'NBD_INFO_EXPORT has the wrong length', { path: this.label, struct: 'NbdInfoExport', field: 'length', expected: InfoExport.size, found: r.data.length });
        exportInfo = InfoExport.decode(r.data, 0, this.label);
      } else if (type === Info.BLOCK_SIZE) {
        if (r.data.length !== InfoBlockSize.size) throw new DiskError('FILEIO', 'NBD_INFO_BLOCK_SIZE has the wrong length', { path: this.label, struct: 'NbdInfoBlockSize', field: 'length', expected: InfoBlockSize.size, found: r.data.length });
        block = InfoBlockSize.decode(r.data, 0, this.label);
      }
      // other information (NAME, DESCRIPTION, types we do not know) is not needed
    }
    if (!exportInfo) throw new DiskError('FILEIO', 'the server acknowledged GO without NBD_INFO_EXPORT', { path: this.label, struct: 'NbdInfoExport', field: 'infoType' });
    return this.finish(exportInfo.size, exportInfo.transmissionFlags, block, structured, allocationContext);
  }

  private async startTls(): Promise<void> {
    this.send(Opt.STARTTLS);
    const r = await this.reply(Opt.STARTTLS);
    if (r.replyType !== Rep.ACK) {
      if (Handshake.isError(r.replyType)) {
        const e = this.refused(Opt.STARTTLS, r);
        throw new DiskError('FILENOPERMISSION', `the server does not offer TLS: ${e.message}`, e.details);
      }
      throw this.fail(`unexpected reply ${nameOf(Rep, r.replyType)} to STARTTLS`, 'replyType');
    }
    // nothing may sit between the ACK and the TLS handshake (an injection attempt otherwise)
    if (this.reader.pending > 0) throw this.fail('the server sent bytes after acknowledging STARTTLS', 'STARTTLS');
    this.reader.detach();
    this.stream = await upgradeClient(this.stream, this.tls!, this.label);
    this.reader = new ByteReader(this.stream, 1024 * 1024, 'server');
  }

  /** SET_META_CONTEXT base:allocation: its id, or undefined when the server has none */
  private async selectAllocation(): Promise<number | undefined> {
    this.send(Opt.SET_META_CONTEXT, encodeMetaContextRequest(this.exportName, [CONTEXT_BASE_ALLOCATION]));
    let id: number | undefined;
    for (;;) {
      const r = await this.reply(Opt.SET_META_CONTEXT);
      if (r.replyType === Rep.ACK) return id;
      if (Handshake.isError(r.replyType)) return undefined; // block status is an extra: go on without
      if (r.replyType !== Rep.META_CONTEXT || r.data.length < 4) throw this.fail(`unexpected reply ${nameOf(Rep, r.replyType)} to SET_META_CONTEXT`, 'replyType', { found: r.replyType });
      if (r.data.subarray(4).toString('utf8') === CONTEXT_BASE_ALLOCATION) id = r.data.readUInt32BE(0);
    }
  }

  /** NBD_OPT_EXPORT_NAME: the old way in, for servers without GO; no block sizes, no error replies */
  private async exportNameFallback(noZeroes: boolean, structured: boolean, allocationContext: number | undefined): Promise<Negotiated> {
    this.send(Opt.EXPORT_NAME, Buffer.from(this.exportName, 'utf8'));
    let head: Buffer;
    try {
      head = await this.reader.read(ExportNameReply.size + (noZeroes ? 0 : EXPORT_NAME_PADDING));
    } catch (err) {
      throw new DiskError('FILENOTFOUND', `the server closed the connection on EXPORT_NAME (no export ${JSON.stringify(this.exportName)}?)`, { path: this.label, struct: 'NBD handshake', field: 'EXPORT_NAME' }, { cause: err });
    }
    const r = ExportNameReply.decode(head, 0, this.label);
    return this.finish(r.size, r.transmissionFlags, undefined, structured, allocationContext);
  }

  private finish(size: bigint, flags: number, block: { minimum: number; preferred: number; maximum: number } | undefined, structured: boolean, allocationContext: number | undefined): Negotiated {
    const facts: ExportFacts = {
      size: toSafeNumber(size, { path: this.label, struct: 'NbdInfoExport', field: 'size' }),
      flags,
      minBlock: 1,
      preferredBlock: 4096,
      maxPayload: MAX_PAYLOAD,
      structured,
      allocationContext,
    };
    if (block) {
      const f = (field: string, message: string, found: number) => new DiskError('FILEIO', message, { path: this.label, struct: 'NbdInfoBlockSize', field, found });
      if (!isPowerOfTwo(block.minimum) || block.minimum > 65536) throw f('minimum', 'the minimum block size is not a power of two from 1 to 64 KiB', block.minimum);
      if (!isPowerOfTwo(block.preferred) || block.preferred < block.minimum) throw f('preferred', 'the preferred block size is not a power of two at least the minimum', block.preferred);
      if (block.maximum < block.minimum || (block.maximum !== 0xffffffff && block.maximum % block.minimum !== 0)) throw f('maximum', 'the maximum payload is not a multiple of the minimum block size', block.maximum);
      facts.minBlock = block.minimum;
      facts.preferredBlock = block.preferred;
      const max = Math.min(block.maximum, MAX_PAYLOAD);
      facts.maxPayload = max - (max % block.minimum);
    }
    if (!(flags & TFlag.HAS_FLAGS)) facts.flags = 0;
    return { stream: this.stream, reader: this.reader, facts };
  }
}
