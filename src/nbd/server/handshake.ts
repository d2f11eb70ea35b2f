/**
 * The fixed-newstyle handshake: greeting, client flags, then options until the client picks an
 * export (GO or EXPORT_NAME), aborts, or breaks a rule. Every option's data is read in full
 * before it is judged, so the stream never drifts; a bad option gets an error reply and the
 * connection stays, except where the spec leaves no way to answer (bad magic, oversized data,
 * EXPORT_NAME that cannot be served, TLS failures).
 *
 * STARTTLS: after the ACK, bytes the client sent before the TLS handshake are an injection
 * attempt and end the connection; everything negotiated before it is forgotten (CVE-2021-3716).
 */
import type { Socket } from 'node:net';
import { DiskError } from '../../core/errors.js';
import { CONTEXT_ALLOCATION_DEPTH, CONTEXT_BASE_ALLOCATION, CONTEXT_DIRTY_BITMAP, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, Info, MAX_STRING, Opt, Rep, TFlag } from '../protocol/constants.js';
import { decodeInfoRequest, decodeMetaContextRequest, encodeExportNameReply, encodeGreeting, encodeInfoBlockSize, encodeInfoExport, encodeInfoString, encodeMetaContext, encodeOptionReply, encodeServerEntry, quoteName } from '../protocol/codec.js';
import { ClientFlags, OptionHeader } from '../protocol/structs.js';
import type { ExportBackend, ExportSpec } from './backend.js';
import { ByteReader } from './reader.js';
import { upgradeToTls } from './tls.js';
import type { Connection, ContextKind } from './connection.js';

export interface ChosenExport {
  name: string;
  spec: ExportSpec;
  backend: ExportBackend;
}

/** the transmission flags of `backend` for this connection (they depend on what was negotiated) */
export function transmissionFlags(conn: Connection, backend: ExportBackend): number {
  let f = TFlag.HAS_FLAGS | TFlag.SEND_FLUSH | TFlag.SEND_FUA | TFlag.SEND_CACHE;
  if (conn.ctx.readOnly || backend.readOnly) f |= TFlag.READ_ONLY;
  else f |= TFlag.SEND_TRIM | TFlag.SEND_WRITE_ZEROES | TFlag.SEND_FAST_ZERO;
  // READ replies are always one data chunk, so "don't fragment" is free once chunks exist
  if (conn.structured) f |= TFlag.SEND_DF;
  if (conn.ctx.multiConn) f |= TFlag.CAN_MULTI_CONN;
  return f;
}

/** Run the handshake; resolves with the export chosen, or undefined when the connection ended. */
export async function negotiate(conn: Connection): Promise<ChosenExport | undefined> {
  const { ctx } = conn;
  conn.send(encodeGreeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
  conn.clientFlags = ClientFlags.decode(await conn.reader.read(4)).clientFlags;
  if ((conn.clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) {
    conn.destroy(); // unknown client flag: the spec says close
    return undefined;
  }
  const fixed = (conn.clientFlags & FLAG_C_FIXED_NEWSTYLE) !== 0;
  let options = 0;
  for (;;) {
    const head = await conn.reader.read(OptionHeader.size);
    let h;
    try {
      h = OptionHeader.decode(head);
    } catch {
      conn.destroy(); // wrong option magic: the stream cannot be trusted any more
      return undefined;
    }
    if (h.length > ctx.limits.maxOptionData || ++options > ctx.limits.maxOptions + conn.listed) {
      ctx.log?.(`connection ${conn.id}: ${h.length > ctx.limits.maxOptionData ? `option data of ${h.length} bytes` : 'too many options'}, closing`);
      conn.destroy();
      return undefined;
    }
    const data = await conn.reader.read(h.length);
    const reply = (type: number, payload?: Buffer) => conn.send(encodeOptionReply(h.option, type, payload));
    const error = (type: number, message: string) => reply(type, Buffer.from(message.slice(0, 1024), 'utf8'));

    if (h.option === Opt.EXPORT_NAME) {
      // no way to answer an error here but hanging up
      if ((ctx.tlsMode === 'require' && !conn.tls) || ctx.shuttingDown || conn.extended || data.length > MAX_STRING) {
        conn.destroy();
        return undefined;
      }
      const name = data.toString('utf8');
      const chosen = await openExport(conn, name).catch(() => undefined);
      if (!chosen) {
        conn.destroy();
        return undefined;
      }
      if (conn.meta && conn.meta.exportName !== name) conn.meta = undefined;
      const noZeroes = (conn.clientFlags & FLAG_C_NO_ZEROES) !== 0;
      conn.send(encodeExportNameReply(chosen.backend.size, transmissionFlags(conn, chosen.backend), noZeroes));
      return chosen;
    }
    if (!fixed) {
      conn.destroy(); // a non-fixed client cannot read option replies
      return undefined;
    }
    if (h.option === Opt.ABORT) {
      reply(Rep.ACK);
      conn.end();
      return undefined;
    }
    if (ctx.shuttingDown) {
      error(Rep.ERR_SHUTDOWN, 'server is shutting down');
      continue;
    }
    if (h.option === Opt.STARTTLS) {
      if (data.length) error(Rep.ERR_INVALID, 'STARTTLS takes no data');
      else if (conn.tls) error(Rep.ERR_INVALID, 'TLS is already active');
      else if (ctx.tlsMode === 'off' || !ctx.tlsOptions) error(Rep.ERR_POLICY, 'TLS is not configured on this server');
      else {
        reply(Rep.ACK);
        if (!(await startTls(conn))) return undefined;
      }
      continue;
    }
    if (ctx.tlsMode === 'require' && !conn.tls) {
      error(Rep.ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first');
      continue;
    }
    try {
      const chosen = await handleOption(conn, h.option, data);
      if (chosen) return chosen;
    } catch (err) {
      if (err instanceof DiskError && err.code === 'INVAL') error(Rep.ERR_INVALID, err.message);
      else if (err instanceof DiskError && err.code === 'NOSPACE') error(Rep.ERR_TOO_BIG, err.message);
      else throw err;
    }
  }
}

async function startTls(conn: Connection): Promise<boolean> {
  const raw = conn.raw as Socket;
  // anything already received came before the client could have seen the ACK: injected
  // plaintext (or a client that did not wait); it must never reach TLS or the option parser
  await new Promise((r) => setImmediate(r));
  if (conn.reader.pending > 0 || raw.readableLength > 0) {
    conn.ctx.log?.(`connection ${conn.id}: plaintext after STARTTLS, closing`);
    conn.destroy();
    return false;
  }
  conn.reader.detach();
  try {
    conn.socket = await upgradeToTls(raw, conn.ctx.tlsOptions!);
  } catch (err) {
    conn.ctx.log?.(`connection ${conn.id}: TLS handshake failed: ${(err as Error).message}`);
    conn.destroy();
    return false;
  }
  conn.socket.on('error', () => {});
  conn.reader = new ByteReader(conn.socket);
  conn.tls = true;
  conn.resetNegotiation();
  return true;
}

/** open the export `name` for this connection, or undefined if there is none */
async function openExport(conn: Connection, name: string): Promise<ChosenExport | undefined> {
  const spec = await conn.ctx.exports.find(name);
  if (!spec) return undefined;
  const backend = await conn.ctx.exports.acquire(spec);
  return { name: spec.name, spec, backend };
}

async function lookup(conn: Connection, name: string): Promise<ExportSpec | undefined> {
  return conn.ctx.exports.find(name);
}

/** the options after the TLS gate; resolves with an export when GO succeeded */
async function handleOption(conn: Connection, option: number, data: Buffer): Promise<ChosenExport | undefined> {
  const reply = (type: number, payload?: Buffer) => conn.send(encodeOptionReply(option, type, payload));
  const error = (type: number, message: string) => reply(type, Buffer.from(message, 'utf8'));
  switch (option) {
    case Opt.LIST: {
      if (data.length) return void error(Rep.ERR_INVALID, 'LIST takes no data');
      const all = await conn.ctx.exports.list();
      for (const e of all) reply(Rep.SERVER, encodeServerEntry(e.name, e.description));
      // a lister may then ask INFO of each export (nbdkit grants the same)
      conn.listed = Math.max(conn.listed, all.length);
      reply(Rep.ACK);
      return undefined;
    }
    case Opt.STRUCTURED_REPLY: {
      if (data.length) return void error(Rep.ERR_INVALID, 'STRUCTURED_REPLY takes no data');
      if (conn.extended) return void error(Rep.ERR_EXT_HEADER_REQD, 'extended headers are already on');
      if (conn.structured) return void error(Rep.ERR_INVALID, 'structured replies are already on');
      conn.structured = true;
      reply(Rep.ACK);
      return undefined;
    }
    case Opt.EXTENDED_HEADERS: {
      if (!conn.ctx.extendedHeaders) return void error(Rep.ERR_UNSUP, 'extended headers are not enabled on this server');
      if (data.length) return void error(Rep.ERR_INVALID, 'EXTENDED_HEADERS takes no data');
      if (conn.extended) return void error(Rep.ERR_INVALID, 'extended headers are already on');
      conn.extended = true;
      conn.structured = true;
      reply(Rep.ACK);
      return undefined;
    }
    case Opt.LIST_META_CONTEXT:
    case Opt.SET_META_CONTEXT: {
      const set = option === Opt.SET_META_CONTEXT;
      if (set) conn.meta = undefined; // a new selection replaces the old even when it fails
      const q = decodeMetaContextRequest(data, conn.ctx.limits.maxQueries);
      if (set && !conn.structured) return void error(Rep.ERR_INVALID, 'SET_META_CONTEXT needs structured replies first');
      const found = await lookup(conn, q.name);
      if (!found) return void error(Rep.ERR_UNKNOWN, `no export named ${quoteName(q.name)}`);
      const kinds = matchContexts(q.queries, set, found.bitmaps ?? []);
      kinds.forEach((kind, i) => reply(Rep.META_CONTEXT, encodeMetaContext(set ? i : 0, kind)));
      if (set) conn.meta = { exportName: q.name, contexts: kinds.map((kind, id) => ({ id, kind })) };
      reply(Rep.ACK);
      return undefined;
    }
    case Opt.INFO:
    case Opt.GO: {
      const req = decodeInfoRequest(data);
      const spec = await lookup(conn, req.name);
      if (!spec) return void error(Rep.ERR_UNKNOWN, `no export named ${quoteName(req.name)}`);
      let backend: ExportBackend;
      try {
        backend = await conn.ctx.exports.acquire(spec);
      } catch (err) {
        conn.ctx.log?.(`connection ${conn.id}: cannot open export ${quoteName(req.name)}: ${(err as Error).message}`);
        return void error(Rep.ERR_UNKNOWN, `export ${quoteName(req.name)} cannot be opened`);
      }
      reply(Rep.INFO, encodeInfoExport(backend.size, transmissionFlags(conn, backend)));
      if (req.infos.includes(Info.NAME)) reply(Rep.INFO, encodeInfoString(Info.NAME, spec.name));
      if (req.infos.includes(Info.DESCRIPTION) && spec.description) reply(Rep.INFO, encodeInfoString(Info.DESCRIPTION, spec.description));
      const bs = backend.blockSizes;
      reply(Rep.INFO, encodeInfoBlockSize(bs.minimum, bs.preferred, bs.maximum));
      reply(Rep.ACK);
      if (option === Opt.INFO) {
        await conn.ctx.exports.release(spec);
        return undefined;
      }
      // contexts chosen for another export do not carry over (qemu does the same)
      if (conn.meta && conn.meta.exportName !== req.name) conn.meta = undefined;
      return { name: spec.name, spec, backend };
    }
    default:
      error(Rep.ERR_UNSUP, `option ${option} is not supported`);
      return undefined;
  }
}

/** the contexts a list of queries selects (an empty LIST query list means all of them) */
function matchContexts(queries: readonly string[], set: boolean, bitmaps: readonly string[]): ContextKind[] {
  const out: ContextKind[] = [];
  const add = (k: ContextKind) => {
    if (!out.includes(k)) out.push(k);
  };
  const dirty = bitmaps.map((b) => `${CONTEXT_DIRTY_BITMAP}${b}` as const);
  if (queries.length === 0 && !set) return [CONTEXT_BASE_ALLOCATION, CONTEXT_ALLOCATION_DEPTH, ...dirty];
  for (const q of queries) {
    if (q === CONTEXT_BASE_ALLOCATION || (!set && q === 'base:')) add(CONTEXT_BASE_ALLOCATION);
    else if (q === CONTEXT_ALLOCATION_DEPTH) add(CONTEXT_ALLOCATION_DEPTH);
    else if (!set && q === 'qemu:') [CONTEXT_ALLOCATION_DEPTH as ContextKind, ...dirty].forEach(add);
    else if (!set && q === CONTEXT_DIRTY_BITMAP) dirty.forEach(add);
    else if ((dirty as string[]).includes(q)) add(q as ContextKind);
    // queries in other namespaces, or unknown leaves, select nothing (spec: ignore them)
  }
  return out;
}
