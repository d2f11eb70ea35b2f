/**
 * The static file server of `vdkit web`: the names of one folder, read when the server starts
 * (the browser build is small), served by exact name. A path that is not one of them is a 404,
 * so nothing outside the folder can be asked for, whatever the URL says.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { DiskError } from '../core/errors.js';
import { join } from '../core/names.js';
import { hostFiles } from '../storage/file.js';

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

/** dist/web of this package: beside dist/cli (the bundle) or three folders above dist/src/cli/static-server.js */
export async function webFolder(): Promise<string> {
  const files = hostFiles();
  for (const rel of ['../web/', '../../web/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (await files.exists(join(dir, 'index.html'))) return dir;
  }
  throw new DiskError('FILENOTFOUND', 'the browser build is missing: run `npm run build` (scripts/bundle-web.mjs makes dist/web)', { path: fileURLToPath(new URL('../web/', import.meta.url)) });
}

export interface StaticServer {
  readonly url: string;
  /** resolves when the server has stopped */
  readonly closed: Promise<void>;
  close(): Promise<void>;
}

async function readFolder(dir: string): Promise<Map<string, { body: Buffer; type: string }>> {
  const ns = hostFiles();
  const out = new Map<string, { body: Buffer; type: string }>();
  for (const name of await ns.list(dir)) {
    const path = join(dir, name);
    if ((await ns.kind(path)) !== 'file') continue;
    const ext = name.slice(name.lastIndexOf('.'));
    const type = TYPES[ext];
    if (!type) continue;
    const st = await ns.open(path);
    try {
      out.set('/' + name, { body: await st.read(0, await st.size()), type });
    } finally {
      await st.close();
    }
  }
  return out;
}

export async function serveStatic(opts: { dir: string; host: string; port: number }): Promise<StaticServer> {
  const files = await readFolder(opts.dir);
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const f = files.get(path === '/' ? '/index.html' : path);
    const headers = { 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer', 'Cache-Control': 'no-cache' };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { ...headers, Allow: 'GET, HEAD' }).end();
      req.resume();
      return;
    }
    if (!f) {
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain; charset=utf-8' }).end('not found\n');
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Type': f.type, 'Content-Length': f.body.length });
    res.end(req.method === 'HEAD' ? undefined : f.body);
  };
  const server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  const closed = new Promise<void>((resolve) => server.once('close', () => resolve()));
  return {
    url: `http://${host}:${a.port}/`,
    closed,
    async close() {
      server.close();
      server.closeAllConnections();
      await closed;
    },
  };
}
