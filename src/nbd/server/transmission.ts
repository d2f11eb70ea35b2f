/**
 * The transmission phase: read a request, check it, run it, reply; replies go out as each
 * request finishes (out of order, matched by cookie). At most `maxInFlight` requests and
 * `maxBytesInFlight` payload/read bytes are held per connection: when the budget is full the
 * next request is not read, and a reply the client does not take keeps its slot until the
 * socket drains, so a client that stops reading stops itself, not the server.
 *
 * Order of checks keeps the stream in sync: magic (else hang up), payload framing (a payload
 * is always consumed, or the connection ends), then meaning (error reply, connection kept).
 */
import { DiskError } from '../../core/errors.js';
import { CmdFlag, Cmd, CONTEXT_DIRTY_BITMAP, MAX_PAYLOAD, NbdErr, STATE_HOLE, STATE_ZERO, TFlag } from '../protocol/constants.js';
import { decodeRequest, encodeBlockStatusChunk, encodeDataChunkHead, encodeErrorChunk, encodeNoneChunk, encodeSimpleReply, type ChunkTarget, type NbdRequest, type StatusExtent } from '../protocol/codec.js';
import { ExtendedRequest, Request } from '../protocol/structs.js';
import type { BackendExtent, ExportBackend } from './backend.js';
import type { Connection, ContextKind } from './connection.js';
import { transmissionFlags, type ChosenExport } from './handshake.js';
import { Budget, nbdErrno } from './limits.js';
import { writeZeroes, FastZeroUnsupported } from './zeroes.js';

/** flags each command accepts (FUA anywhere, as the spec allows once SEND_FUA is advertised) */
const ALLOWED_FLAGS: Record<number, number> = {
  [Cmd.READ]: CmdFlag.FUA | CmdFlag.DF,
  [Cmd.WRITE]: CmdFlag.FUA | CmdFlag.PAYLOAD_LEN,
  [Cmd.FLUSH]: CmdFlag.FUA,
  [Cmd.TRIM]: CmdFlag.FUA,
  [Cmd.CACHE]: CmdFlag.FUA,
  [Cmd.WRITE_ZEROES]: CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO,
  [Cmd.BLOCK_STATUS]: CmdFlag.FUA | CmdFlag.REQ_ONE,
  [Cmd.DISC]: 0,
};

class RequestError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

export async function transmit(conn: Connection, chosen: ChosenExport): Promise<void> {
  const { backend } = chosen;
  const limits = conn.ctx.limits;
  const budget = new Budget(limits.maxInFlight, limits.maxBytesInFlight);
  conn.budget = budget;
  conn.transmitting = true;
  const flags = transmissionFlags(conn, backend);
  const readOnly = (flags & TFlag.READ_ONLY) !== 0;
  const headerSize = conn.extended ? ExtendedRequest.size : Request.size;
  for (;;) {
    // stop reading requests while the connection's budget is spent: TCP then throttles the client
    await budget.room();
    let head: Buffer;
    try {
      head = await conn.reader.read(headerSize);
    } catch {
      break; // client gone
    }
    let req: NbdRequest;
    try {
      req = decodeRequest(head, conn.extended);
    } catch {
      conn.destroy(); // wrong magic: nothing after it can be trusted
      break;
    }
    // payload framing first: a payload is always consumed or the connection ends
    const hasPayload = conn.extended ? (req.flags & CmdFlag.PAYLOAD_LEN) !== 0 : req.type === Cmd.WRITE;
    let payload: Buffer | undefined;
    let framingError: RequestError | undefined;
    if (hasPayload) {
      const n = req.length;
      if (n > BigInt(MAX_PAYLOAD) || req.type !== Cmd.WRITE) {
        if (n > BigInt(limits.maxSkip)) {
          reply(conn, req, { errno: NbdErr.EOVERFLOW, message: 'payload too large' });
          conn.end();
          break;
        }
        try {
          await conn.reader.skip(Number(n));
        } catch {
          break;
        }
        framingError = new RequestError(n > BigInt(MAX_PAYLOAD) ? NbdErr.EOVERFLOW : NbdErr.EINVAL, n > BigInt(MAX_PAYLOAD) ? `payload of ${n} bytes is above the ${MAX_PAYLOAD}-byte maximum` : 'this command takes no payload');
      } else {
        await budget.acquire(Number(n));
        try {
          payload = await conn.reader.read(Number(n));
        } catch {
          budget.release(Number(n));
          break;
        }
      }
    }
    if (req.type === Cmd.DISC) {
      if (payload) budget.release(payload.length);
      await budget.idle();
      conn.end();
      break;
    }
    let release = payload?.length ?? 0;
    if (!payload) {
      // a READ's reply buffer counts against the budget as a WRITE's payload does
      release = req.type === Cmd.READ && !framingError && req.length <= BigInt(MAX_PAYLOAD) ? Number(req.length) : 0;
      await budget.acquire(release);
    }
    void (async () => {
      try {
        if (framingError) throw framingError;
        if (conn.ctx.shuttingDown) throw new RequestError(NbdErr.ESHUTDOWN, 'server is shutting down');
        await execute(conn, backend, req, payload, flags, readOnly);
      } catch (err) {
        if (err instanceof RequestError) reply(conn, req, { errno: err.errno, message: err.message });
        else if (err instanceof FastZeroUnsupported) reply(conn, req, { errno: NbdErr.ENOTSUP, message: err.message });
        else reply(conn, req, { errno: nbdErrno(err), message: err instanceof DiskError ? err.message : String((err as Error | undefined)?.message ?? err) });
      }
      await conn.drained(limits.maxQueuedReplies);
      budget.release(release);
    })();
  }
  await budget.idle();
}

/** checks then runs one request, sending its reply on success */
async function execute(conn: Connection, backend: ExportBackend, req: NbdRequest, payload: Buffer | undefined, flags: number, readOnly: boolean): Promise<void> {
  const allowed = ALLOWED_FLAGS[req.type];
  if (allowed === undefined) throw new RequestError(NbdErr.EINVAL, `unknown command ${req.type}`);
  if ((req.flags & ~allowed) !== 0) throw new RequestError(NbdErr.EINVAL, `flags 0x${req.flags.toString(16)} are not valid for command ${req.type}`);
  if ((req.flags & CmdFlag.DF) && !(flags & TFlag.SEND_DF)) throw new RequestError(NbdErr.EINVAL, 'DF needs structured replies');
  const size = BigInt(backend.size);
  const { offset, length } = req;
  const writes = req.type === Cmd.WRITE || req.type === Cmd.WRITE_ZEROES || req.type === Cmd.TRIM;
  if (writes && readOnly) throw new RequestError(NbdErr.EPERM, 'the export is read-only');
  if (req.type === Cmd.FLUSH) {
    if (offset !== 0n || length !== 0n) throw new RequestError(NbdErr.EINVAL, 'FLUSH takes offset 0 and length 0');
    await backend.flush();
    return ok(conn, req);
  }
  if (offset > size || length > size - offset) {
    const enospc = req.type === Cmd.WRITE || req.type === Cmd.WRITE_ZEROES;
    throw new RequestError(enospc ? NbdErr.ENOSPC : NbdErr.EINVAL, `range ${offset}+${length} is outside the ${size}-byte export`);
  }
  const off = Number(offset);
  const len = Number(length);
  const fua = (req.flags & CmdFlag.FUA) !== 0;
  switch (req.type) {
    case Cmd.READ: {
      if (len > MAX_PAYLOAD) throw new RequestError(NbdErr.EINVAL, `read of ${len} bytes is above the ${MAX_PAYLOAD}-byte maximum`);
      if (len === 0) {
        conn.send(conn.structured ? encodeNoneChunk(target(conn, req)) : encodeSimpleReply(0, req.cookie));
        return;
      }
      let data: Buffer;
      let pooled = false;
      if (backend.readInto) {
        data = conn.buffers.take(len);
        try {
          await backend.readInto(data, off);
        } catch (err) {
          conn.buffers.give(data);
          throw err;
        }
        pooled = true;
      } else data = await backend.read(off, len);
      const head = conn.structured ? encodeDataChunkHead(target(conn, req), off, len, true) : encodeSimpleReply(0, req.cookie);
      conn.sendThen([head, data], pooled ? () => conn.buffers.give(data) : undefined);
      return;
    }
    case Cmd.WRITE:
      if (len) await backend.write(off, payload!, { fua });
      return ok(conn, req);
    case Cmd.WRITE_ZEROES:
      if (len) await writeZeroes(backend, off, len, { noHole: (req.flags & CmdFlag.NO_HOLE) !== 0, fastZero: (req.flags & CmdFlag.FAST_ZERO) !== 0, fua });
      return ok(conn, req);
    case Cmd.TRIM:
      // TRIM leaves the range undefined; vdkit makes it read as zeros either way, so a client
      // and a model agree (discard where the image can, else zeros over what is not zero)
      if (len) {
        if (backend.discard) await backend.discard(off, len);
        else await writeZeroes(backend, off, len, { noHole: false, fastZero: false, fua: false });
        if (fua) await backend.flush();
      }
      return ok(conn, req);
    case Cmd.CACHE:
      return ok(conn, req); // a hint; the images are read on demand
    case Cmd.BLOCK_STATUS:
      return blockStatus(conn, backend, req, off, len);
    default:
      throw new RequestError(NbdErr.EINVAL, `unknown command ${req.type}`);
  }
}

function target(conn: Connection, req: NbdRequest): ChunkTarget {
  return { mode: conn.extended ? 'extended' : 'structured', cookie: req.cookie, offset: req.offset };
}

function ok(conn: Connection, req: NbdRequest): void {
  if (conn.extended) conn.send(encodeNoneChunk(target(conn, req)));
  else conn.send(encodeSimpleReply(0, req.cookie));
}

/** an error reply in the flavour the connection speaks */
function reply(conn: Connection, req: NbdRequest, e: { errno: number; message: string }): void {
  if (conn.structured) conn.send(encodeErrorChunk(target(conn, req), e.errno, e.message));
  else conn.send(encodeSimpleReply(e.errno, req.cookie));
}

async function blockStatus(conn: Connection, backend: ExportBackend, req: NbdRequest, off: number, len: number): Promise<void> {
  const meta = conn.meta;
  if (!conn.structured || !meta || meta.contexts.length === 0 || meta.exportName !== conn.exportName) {
    throw new RequestError(NbdErr.EINVAL, 'no metadata context was selected for this export');
  }
  if (len === 0) throw new RequestError(NbdErr.EINVAL, 'block status of zero bytes');
  const limits = conn.ctx.limits;
  const reqOne = (req.flags & CmdFlag.REQ_ONE) !== 0;
  const span = Math.min(len, limits.maxStatusLength);
  const needsAllocation = meta.contexts.some((c) => !c.kind.startsWith(CONTEXT_DIRTY_BITMAP));
  const extents = needsAllocation ? await backend.blockStatus(off, span) : [];
  const lists: StatusExtent[][] = [];
  for (const c of meta.contexts) {
    if (!c.kind.startsWith(CONTEXT_DIRTY_BITMAP)) lists.push(statusExtents(extents, c.kind, reqOne, limits.maxExtents, conn.extended));
    else {
      if (!backend.bitmapStatus) throw new RequestError(NbdErr.EINVAL, 'this export offers no bitmaps');
      const dirty = await backend.bitmapStatus(c.kind.slice(CONTEXT_DIRTY_BITMAP.length), off, span);
      lists.push(statusExtents(bitmapExtents(dirty, off, span), c.kind, reqOne, limits.maxExtents, conn.extended));
    }
  }
  const t = target(conn, req);
  const chunks = meta.contexts.map((c, i) => encodeBlockStatusChunk(t, c.id, lists[i]!, i === meta.contexts.length - 1));
  conn.send(...chunks);
}

/** a context's view of the backend's extents: merged where the status repeats, capped in count */
export function statusExtents(extents: readonly BackendExtent[], kind: ContextKind, reqOne: boolean, maxExtents: number, extended: boolean): StatusExtent[] {
  const out: StatusExtent[] = [];
  // compact descriptors carry 32-bit lengths: stay below 4 GiB and on a 512-byte boundary
  const maxLen = extended ? Number.MAX_SAFE_INTEGER : 0xffffffff - 511;
  for (const e of extents) {
    if (e.length <= 0) continue;
    // a bitmap's extents come as data (dirty: 1) and unallocated (clean: 0) from bitmapExtents
    const status = kind === 'base:allocation' ? (e.state === 'data' ? 0 : STATE_HOLE | STATE_ZERO) : kind === 'qemu:allocation-depth' ? (e.state === 'unallocated' ? 0 : (e.depth ?? 0) + 1) : e.state === 'data' ? 1 : 0;
    const last = out[out.length - 1];
    if (last && last.status === status && last.length + e.length <= maxLen) last.length += e.length;
    else if (last && last.status === status) {
      // cannot merge further: stop here; the client asks again from the end of this answer
      break;
    } else {
      if (out.length >= maxExtents || (reqOne && out.length === 1)) break;
      out.push({ length: Math.min(e.length, maxLen), status });
      if (e.length > maxLen) break;
    }
  }
  return out;
}

/** dirty ranges within [off, off+len) as extents covering it: dirty as 'data', clean as 'unallocated' */
export function bitmapExtents(dirty: readonly { offset: number; length: number }[], off: number, len: number): BackendExtent[] {
  const out: BackendExtent[] = [];
  let at = off;
  for (const r of dirty) {
    const from = Math.max(r.offset, at);
    const to = Math.min(r.offset + r.length, off + len);
    if (to <= from) continue;
    if (from > at) out.push({ offset: at, length: from - at, state: 'unallocated' });
    out.push({ offset: from, length: to - from, state: 'data' });
    at = to;
  }
  if (at < off + len) out.push({ offset: at, length: off + len - at, state: 'unallocated' });
  return out;
}
