/**
 * A small HTTP range server over a folder, for the HTTP namespace tests: HEAD and GET with one
 * `bytes=a-b` range, a strong ETag that changes when a file is rewritten (or `bump`ed),
 * If-Match (412) and If-Range (200 with the whole file on a mismatch), on 127.0.0.1 and a free
 * port, closed when the test ends. `faults` makes it misbehave on purpose, and `log` records
 * every request so a test can count them.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { open, stat } from 'node:fs/promises';
import { join, normalize } from 'node:path';
import type { TestContext } from 'node:test';

export interface Faults {
  /** answer 200 with the whole file to every GET (Range ignored) */
  ignoreRange?: boolean;
  /** answer HEAD with 405 */
  noHead?: boolean;
  /** on a ranged GET: send the headers and this many body bytes, then close the connection */
  dropAfter?: number;
  /** on a ranged GET: send the headers and nothing more */
  stall?: boolean;
  /** on a ranged GET: send this many bytes fewer, with a Content-Length that says so */
  shortBy?: number;
  /** on a ranged GET: a Content-Range shifted by this many bytes */
  shiftRange?: number;
  /** the next this many requests answer 503 */
  fail503?: number;
  /** paths starting with /r/ redirect (302) to the same path without it; /loop redirects to itself */
  redirects?: boolean;
  /** require this Authorization header (401 otherwise) */
  auth?: string;
  /** after this many ranged GETs, rewrite nothing but change the ETag (as if the file were replaced) */
  changeAfterGets?: number;
  /** ignore If-Match and If-Range (a server or cache that does not do conditional requests) */
  ignoreConditions?: boolean;
}

export interface LoggedRequest {
  method: string;
  url: string;
  range?: string;
  authorization?: string;
}

export interface RangeServer {
  url: string;
  port: number;
  log: LoggedRequest[];
  faults: Faults;
  /** ranged GETs answered so far */
  gets(): number;
  /** give `name` a new ETag, as if it were replaced */
  bump(name: string): void;
  close(): Promise<void>;
}

export async function startRangeServer(t: TestContext | undefined, root: string, faults: Faults = {}): Promise<RangeServer> {
  const log: LoggedRequest[] = [];
  const versions = new Map<string, number>();
  const sockets = new Set<Socket>();
  let rangedGets = 0;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    log.push({ method: req.method ?? '', url: req.url ?? '', range: req.headers.range, authorization: req.headers.authorization });
    if (faults.fail503 && faults.fail503 > 0) {
      faults.fail503--;
      res.writeHead(503).end();
      return;
    }
    if (faults.auth !== undefined && req.headers.authorization !== faults.auth) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="t"' }).end();
      return;
    }
    if (faults.redirects && path === '/loop') {
      res.writeHead(302, { location: '/loop' }).end();
      return;
    }
    if (faults.redirects && path.startsWith('/r/')) {
      res.writeHead(302, { location: path.slice(2) }).end();
      return;
    }
    if (req.method === 'HEAD' && faults.noHead) {
      res.writeHead(405).end();
      return;
    }
    const file = join(root, normalize(path).replace(/^(\.\.[/\\])+/, ''));
    const st = await stat(file).catch(() => undefined);
    if (!st || !st.isFile()) {
      res.writeHead(404).end();
      return;
    }
    const size = st.size;
    const key = path;
    const etag = `"${st.ino}-${Math.round(st.mtimeMs)}-${size}-${versions.get(key) ?? 0}"`;
    const common = { etag, 'accept-ranges': 'bytes', 'last-modified': st.mtime.toUTCString() };
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...common, 'content-length': size }).end();
      return;
    }
    const ifMatch = req.headers['if-match'];
    if (!faults.ignoreConditions && ifMatch !== undefined && ifMatch !== etag && ifMatch !== '*') {
      res.writeHead(412, common).end();
      return;
    }
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const ifRange = req.headers['if-range'];
    const honour = m && !faults.ignoreRange && (faults.ignoreConditions || ifRange === undefined || ifRange === etag);
    const fh = await open(file, 'r');
    try {
      if (!honour) {
        res.writeHead(200, { ...common, 'content-length': size });
        const buf = Buffer.alloc(Math.min(size, 4 * 1024 * 1024));
        for (let at = 0; at < size; at += buf.length) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - at), at);
          if (!res.write(buf.subarray(0, bytesRead))) await new Promise((r) => (res.once('drain', r), res.once('close', r)));
          if (res.destroyed) return;
        }
        res.end();
        return;
      }
      const start = Number(m![1]);
      const end = Math.min(m![2] === '' ? size - 1 : Number(m![2]), size - 1);
      if (start >= size) {
        res.writeHead(416, { ...common, 'content-range': `bytes */${size}` }).end();
        return;
      }
      rangedGets++;
      if (faults.changeAfterGets !== undefined && rangedGets > faults.changeAfterGets) versions.set(key, (versions.get(key) ?? 0) + 1);
      const len = end - start + 1;
      const body = Buffer.alloc(len);
      await fh.read(body, 0, len, start);
      const shift = faults.shiftRange ?? 0;
      const short = faults.shortBy ?? 0;
      const sent = Math.max(0, len - short);
      res.writeHead(206, { ...common, 'content-range': `bytes ${start + shift}-${end + shift}/${size}`, 'content-length': sent });
      if (faults.stall) return;
      if (faults.dropAfter !== undefined) {
        res.write(body.subarray(0, Math.min(faults.dropAfter, len)), () => res.socket?.destroy());
        return;
      }
      res.end(body.subarray(0, sent));
    } finally {
      await fh.close();
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  let closed = false;
  const rs: RangeServer = {
    url: `http://127.0.0.1:${port}`,
    port,
    log,
    faults,
    gets: () => rangedGets,
    bump: (name) => versions.set(name.startsWith('/') ? name : `/${name}`, (versions.get(name.startsWith('/') ? name : `/${name}`) ?? 0) + 1),
    close: async () => {
      if (closed) return;
      closed = true;
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  t?.after(() => rs.close());
  return rs;
}
