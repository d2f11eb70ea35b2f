/**
 * serve(): the library entry point of the NBD server. It owns the listener, the connection cap
 * (`shared`: connections beyond it wait, unanswered, until one leaves), the export table and an
 * orderly close: stop accepting, answer new requests with ESHUTDOWN, let in-flight requests
 * finish, flush and close the images.
 */
import net from 'node:net';
import { basename } from '../../core/names.js';
import { hostFiles } from '../../storage/file.js';
import { DiskError } from '../../core/errors.js';
import { DEFAULT_PORT } from '../protocol/constants.js';
import type { ExportSpec } from './backend.js';
import { BufferPool } from './buffers.js';
import { Connection, type ServerContext } from './connection.js';
import { openDiskBackend } from './disk-backend.js';
import { ExportTable } from './exports.js';
import { negotiate } from './handshake.js';
import { DEFAULT_LIMITS, type Limits } from './limits.js';
import { loadPskFile, loadX509Dir, serverContextOptions, type TlsCredentials, type TlsMode } from './tls.js';
import { transmit } from './transmission.js';
import { enlargeSendBuffer } from './send-buffer.js';

export interface ImageExport {
  path: string;
  /** export name (default: "" for a lone image, else the file name) */
  name?: string;
  description?: string;
  format?: string;
  /** persistent dirty bitmaps offered as qemu:dirty-bitmap:NAME contexts (qemu-nbd -B NAME) */
  bitmaps?: readonly string[];
}

export type ListenOptions = { host?: string; port?: number } | { socket: string } | { fd: number };

export interface ServeTlsOptions {
  mode: TlsMode;
  /** folder with server-cert.pem, server-key.pem and optionally ca-cert.pem */
  x509Dir?: string;
  /** file of username:hexkey lines */
  pskFile?: string;
  /** credentials already loaded (instead of x509Dir / pskFile) */
  credentials?: TlsCredentials;
}

export interface ServeOptions {
  /** image files to serve (opened now, kept open until close) */
  images?: readonly (string | ImageExport)[];
  /** other backends (opened when a client picks them) */
  exports?: readonly ExportSpec[];
  /** serve every image of this folder by its file name (opened on demand) */
  dir?: string;
  /** default 127.0.0.1:10809 */
  listen?: ListenOptions;
  tls?: ServeTlsOptions;
  readOnly?: boolean;
  /** serve only the named links, not their chains */
  singleLink?: boolean;
  /** most connections served at once (default 16); CAN_MULTI_CONN is advertised when above 1 */
  shared?: number;
  /** close the server once its first client (and every other) has gone */
  oneShot?: boolean;
  limits?: Partial<Limits>;
  /** offer NBD_OPT_EXTENDED_HEADERS (experimental in the spec) */
  extendedHeaders?: boolean;
  log?: (msg: string) => void;
}

export interface NbdServer {
  /** where it listens: TCP host and port, or the Unix socket path */
  readonly address: { host: string; port: number } | { socket: string };
  /** an NBD URI for the default (or first) export */
  readonly uri: string;
  /** connections open now (handshake or transmission) */
  readonly connections: number;
  /** resolves when the server has closed (by close() or, with oneShot, by itself) */
  readonly closed: Promise<void>;
  close(): Promise<void>;
}

export async function serve(opts: ServeOptions): Promise<NbdServer> {
  const specs: ExportSpec[] = [...(opts.exports ?? [])];
  const images = (opts.images ?? []).map((i) => (typeof i === 'string' ? { path: i } : i));
  const imageSpecs: ExportSpec[] = images.map((img) => {
    const name = img.name ?? (images.length === 1 && specs.length === 0 && !opts.dir ? '' : basename(img.path));
    const openOpts = { readOnly: opts.readOnly, singleLink: opts.singleLink, format: img.format, bitmaps: img.bitmaps };
    return { name, description: img.description, bitmaps: img.bitmaps, open: () => openDiskBackend(img.path, openOpts) };
  });
  specs.push(...imageSpecs);
  if (specs.length === 0 && !opts.dir) throw new DiskError('INVAL', 'nothing to serve: give images, exports or a folder');
  const names = new Set<string>();
  for (const s of specs) {
    if (names.has(s.name)) throw new DiskError('INVAL', `two exports are named ${JSON.stringify(s.name)}`);
    names.add(s.name);
  }
  const table = new ExportTable(specs, opts.dir ? { dir: opts.dir, open: { readOnly: opts.readOnly, singleLink: opts.singleLink } } : undefined);

  let tlsOptions;
  const tlsMode = opts.tls?.mode ?? 'off';
  if (opts.tls && tlsMode !== 'off') {
    const creds = opts.tls.credentials ?? (opts.tls.pskFile ? await loadPskFile(opts.tls.pskFile) : opts.tls.x509Dir ? await loadX509Dir(opts.tls.x509Dir) : undefined);
    if (!creds) throw new DiskError('INVAL', 'TLS needs an X.509 folder or a PSK file');
    tlsOptions = serverContextOptions(creds);
  }
  const shared = opts.shared ?? 16;
  if (!Number.isInteger(shared) || shared < 1) throw new DiskError('INVAL', 'shared must be a whole number >= 1', { field: 'shared', found: shared });
  const ctx: ServerContext = {
    exports: table,
    tlsMode,
    tlsOptions,
    limits: { ...DEFAULT_LIMITS, ...opts.limits },
    extendedHeaders: !!opts.extendedHeaders,
    readOnly: !!opts.readOnly,
    multiConn: shared > 1,
    shuttingDown: false,
    log: opts.log,
    // one pool for all connections: clients that reconnect (nbdcopy, qemu-img, backup tools
    // opening a connection per disk) reuse the buffers instead of growing new ones, which the
    // garbage collector then has to find
    buffers: new BufferPool(32 * 1024 * 1024, 4 * 1024 * 1024),
  };

  // the images named up front are opened now, so a bad one fails serve() instead of a client,
  // and stay open (pinned) until close()
  try {
    for (const s of imageSpecs) await table.acquire(s, true);
  } catch (err) {
    await table.closeAll().catch(() => {});
    throw err;
  }

  const live = new Set<Connection>();
  const tasks = new Set<Promise<void>>();
  const waiting: net.Socket[] = [];
  const maxWaiting = shared * 4;
  let nextId = 0;
  let closing: Promise<void> | undefined;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));

  const start = (raw: net.Socket) => {
    const conn = new Connection(raw, ctx, ++nextId);
    live.add(conn);
    const task = runConnection(conn).finally(() => {
      live.delete(conn);
      tasks.delete(task);
      const next = waiting.shift();
      if (next && !ctx.shuttingDown) start(next);
      else if (opts.oneShot && live.size === 0 && waiting.length === 0) void close();
    });
    tasks.add(task);
  };

  const listener = net.createServer({ noDelay: true, pauseOnConnect: false }, (raw) => {
    raw.setNoDelay?.(true);
    enlargeSendBuffer(raw, ctx.limits.sendBuffer);
    raw.on('error', () => {});
    if (ctx.shuttingDown) return void raw.destroy();
    if (live.size < shared) return start(raw);
    if (waiting.length >= maxWaiting) return void raw.destroy();
    waiting.push(raw);
    raw.once('close', () => {
      const i = waiting.indexOf(raw);
      if (i >= 0) waiting.splice(i, 1);
    });
  });
  listener.on('error', (err) => ctx.log?.(`listener: ${err.message}`));

  const listen = opts.listen ?? {};
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    if ('socket' in listen) listener.listen(listen.socket, () => resolve());
    else if ('fd' in listen) listener.listen({ fd: listen.fd }, () => resolve());
    else listener.listen(listen.port ?? DEFAULT_PORT, listen.host ?? '127.0.0.1', () => resolve());
  }).catch(async (err) => {
    await table.closeAll().catch(() => {});
    throw new DiskError('FILEIO', `cannot listen: ${(err as Error).message}`, { field: 'listen' }, { cause: err });
  });

  const addr = listener.address();
  // an inherited (socket-activated) Unix socket may have no name at all
  const address: { host: string; port: number } | { socket: string } =
    typeof addr === 'string' || !addr ? { socket: 'socket' in listen ? listen.socket : (addr ?? '') } : 'socket' in listen ? { socket: listen.socket } : { host: addr.address, port: addr.port };
  const defaultName = specs.length ? specs[0]!.name : '';
  const scheme = tlsMode === 'require' ? 'nbds' : 'nbd';
  const path = encodeURIComponent(defaultName).replace(/%2F/g, '/');
  const uri = 'socket' in address ? `${scheme}+unix:///${path}?socket=${encodeURIComponent(address.socket).replace(/%2F/g, '/')}` : `${scheme}://${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}/${path}`;

  async function close(): Promise<void> {
    if (closing) return closing;
    closing = (async () => {
      ctx.shuttingDown = true;
      const stopped = new Promise<void>((r) => listener.close(() => r()));
      for (const w of waiting.splice(0)) w.destroy();
      for (const conn of live) {
        if (!conn.transmitting || !conn.budget) {
          conn.destroy();
          continue;
        }
        const budget = conn.budget;
        void (async () => {
          await Promise.race([budget.idle(), new Promise((r) => setTimeout(r, 10_000).unref())]);
          conn.end();
        })();
      }
      await Promise.allSettled([...tasks]);
      await stopped;
      if ('socket' in listen) await hostFiles().remove(listen.socket).catch(() => {});
      try {
        await table.closeAll();
      } finally {
        resolveClosed();
      }
    })();
    return closing;
  }

  return {
    address,
    uri,
    get connections() {
      return live.size;
    },
    closed,
    close,
  };
}

export type { Limits };

/**
 * One connection from greeting to close. Never rejects: whatever a client sends ends, at worst,
 * its own connection. Exported for the protocol fuzzer, which drives it over in-memory streams.
 */
export async function runConnection(conn: Connection): Promise<void> {
  const { ctx } = conn;
  const timer = setTimeout(() => {
    if (!conn.transmitting) {
      ctx.log?.(`connection ${conn.id}: handshake took too long, closing`);
      conn.destroy();
    }
  }, ctx.limits.handshakeMs);
  try {
    const chosen = await negotiate(conn);
    clearTimeout(timer);
    if (!chosen) return;
    conn.exportName = chosen.name;
    conn.backend = chosen.backend;
    try {
      await transmit(conn, chosen);
    } finally {
      await ctx.exports.release(chosen.spec).catch((err) => ctx.log?.(`closing export ${chosen.name}: ${(err as Error).message}`));
    }
  } catch (err) {
    if (!conn.closing) ctx.log?.(`connection ${conn.id}: ${(err as Error).message}`);
    conn.destroy();
  } finally {
    clearTimeout(timer);
  }
}
