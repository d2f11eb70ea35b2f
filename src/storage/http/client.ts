/**
 * One origin's HTTP requests: keep-alive agents with a bounded number of sockets, redirects
 * (as curl -L: 301/302/303/307/308, at most `maxRedirects`, credentials only to the origin they
 * came with), an idle timeout on every request, and retries with exponential backoff for what
 * may pass (5xx, 429, resets, timeouts, a body cut off by the connection). A response that is
 * wrong rather than unlucky (a bad Content-Range, a body of the wrong length) is not retried.
 *
 * Bodies are read into buffers the caller sized from what it asked for; a header never sizes
 * an allocation, and more bytes than expected end the request.
 */
import http from 'node:http';
import https from 'node:https';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { DiskError } from '../../core/errors.js';
import { displayUrl, originOf } from './url.js';

export interface HttpClientOptions {
  /** a request that receives nothing for this long fails (and is retried); default 30 s */
  timeoutMs?: number;
  /** extra tries after a transient failure (5xx, 429, reset, timeout); default 4 */
  retries?: number;
  /** the first backoff; doubled each try, at most 5 s; default 200 ms */
  retryDelayMs?: number;
  /** redirects followed per request; default 5 */
  maxRedirects?: number;
  /** sockets per origin; default 8 */
  connections?: number;
  /** TLS: verify the server's certificate (default true) */
  rejectUnauthorized?: boolean;
  /** TLS: extra CA certificates (PEM) */
  ca?: string | Buffer;
}

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  res: IncomingMessage;
  /** where the answer came from, after redirects */
  url: URL;
}

/** a failure worth another try */
export class Transient extends Error {}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

export class HttpClient {
  private readonly agents: { http: http.Agent; https: https.Agent };
  readonly timeoutMs: number;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private readonly maxRedirects: number;
  /** requests sent, redirects included (tests count them) */
  requests = 0;

  constructor(
    /** the origin credentials belong to, and its Authorization header */
    private readonly auth: { origin: string; header: string } | undefined,
    opts: HttpClientOptions = {},
  ) {
    const maxSockets = Math.max(1, opts.connections ?? 8);
    this.agents = {
      http: new http.Agent({ keepAlive: true, maxSockets }),
      https: new https.Agent({ keepAlive: true, maxSockets, rejectUnauthorized: opts.rejectUnauthorized ?? true, ca: opts.ca }),
    };
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.retries = Math.max(0, opts.retries ?? 4);
    this.retryDelayMs = opts.retryDelayMs ?? 200;
    this.maxRedirects = opts.maxRedirects ?? 5;
  }

  close(): void {
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  /**
   * Run `attempt` until it succeeds, fails for good, or the tries are used up. A `Transient`
   * error is retried after a backoff; anything else is thrown as it is.
   */
  async withRetries<T>(what: string, url: URL, attempt: () => Promise<T>): Promise<T> {
    for (let i = 0; ; i++) {
      try {
        return await attempt();
      } catch (err) {
        if (!(err instanceof Transient)) throw err;
        if (i >= this.retries) {
          throw new DiskError('FILEIO', `${what} failed after ${i + 1} tries: ${err.message}`, { path: displayUrl(url), field: 'request' }, { cause: err });
        }
        await new Promise((r) => setTimeout(r, Math.min(5000, this.retryDelayMs * 2 ** i)));
      }
    }
  }

  /**
   * Send one request and follow redirects; resolves with the final response, its body not yet
   * read (the caller reads or discards it). 5xx and 429 are Transient; a network error or a
   * timeout before the headers too.
   */
  async send(method: 'GET' | 'HEAD', url: URL, headers: Record<string, string>): Promise<Reply> {
    let at = url;
    for (let hop = 0; ; hop++) {
      const reply = await this.once(method, at, headers);
      if (!REDIRECTS.has(reply.status)) {
        if (reply.status >= 500 || reply.status === 429) {
          discard(reply.res);
          throw new Transient(`the server answered ${reply.status} ${reply.res.statusMessage ?? ''}`.trim());
        }
        return reply;
      }
      discard(reply.res);
      const loc = reply.headers.location;
      if (!loc) throw new DiskError('FILEIO', `redirect (${reply.status}) without a Location`, { path: displayUrl(at), field: 'Location' });
      if (hop >= this.maxRedirects) throw new DiskError('FILEIO', `more than ${this.maxRedirects} redirects`, { path: displayUrl(url), field: 'Location', found: displayUrl(at) });
      let next: URL;
      try {
        next = new URL(loc, at);
      } catch {
        throw new DiskError('FILEIO', 'redirect to an invalid URL', { path: displayUrl(at), field: 'Location', found: loc.slice(0, 200) });
      }
      if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new DiskError('FILEIO', 'redirect to a scheme other than http(s)', { path: displayUrl(at), field: 'Location', found: next.protocol });
      // credentials in a Location are not taken (curl neither sends them on nor adopts new ones)
      next.username = '';
      next.password = '';
      next.hash = '';
      at = next;
    }
  }

  private once(method: string, url: URL, headers: Record<string, string>): Promise<Reply> {
    const h: Record<string, string> = { 'user-agent': 'vdkit', ...headers };
    // credentials go only to the origin they were given for (curl -L without --location-trusted)
    if (this.auth && originOf(url) === this.auth.origin) h.authorization = this.auth.header;
    const mod = url.protocol === 'https:' ? https : http;
    const agent = url.protocol === 'https:' ? this.agents.https : this.agents.http;
    this.requests++;
    return new Promise<Reply>((resolve, reject) => {
      const req = mod.request(url, { method, headers: h, agent }, (res) => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, res, url });
      });
      req.setTimeout(this.timeoutMs, () => {
        req.destroy(new Transient(`no answer for ${this.timeoutMs} ms`));
      });
      req.on('error', (err) => reject(err instanceof Transient || err instanceof DiskError ? err : transientOrFatal(err)));
      req.end();
    });
  }
}

/** network errors that another try may cure; anything else (a TLS certificate refused, DNS) is final */
function transientOrFatal(err: NodeJS.ErrnoException): Error {
  const code = err.code ?? '';
  if (['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN', 'UND_ERR_SOCKET'].includes(code) || /socket hang up/i.test(err.message)) {
    return new Transient(`${code || 'connection'}: ${err.message}`);
  }
  return new DiskError('FILEIO', `request failed: ${err.message}`, { field: 'connection', found: code || undefined }, { cause: err });
}

/** drop a body we do not want (the socket is closed rather than drained: it may be large) */
export function discard(res: IncomingMessage): void {
  res.destroy();
}

/**
 * Read the whole body into `into`. More bytes than `into` holds, or fewer when the body ends
 * normally, is the server's fault (not retried); a connection that breaks off, or goes quiet for
 * the timeout, is Transient.
 */
export function readBodyInto(res: IncomingMessage, into: Buffer, timeoutMs: number, where: { path: string; field: string }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let at = 0;
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        res.destroy();
        reject(err);
      } else resolve();
    };
    let timer = setTimeout(() => finish(new Transient(`the body stalled for ${timeoutMs} ms`)), timeoutMs);
    res.on('data', (chunk: Buffer) => {
      if (done) return;
      clearTimeout(timer);
      timer = setTimeout(() => finish(new Transient(`the body stalled for ${timeoutMs} ms`)), timeoutMs);
      if (at + chunk.length > into.length) {
        finish(new DiskError('FILEIO', `the body is longer than the ${into.length} bytes asked for`, { ...where, expected: into.length, found: `more than ${at + chunk.length - 1}` }));
        return;
      }
      chunk.copy(into, at);
      at += chunk.length;
    });
    res.on('end', () => {
      if (at !== into.length) finish(new DiskError('FILEIO', `short body: ${at} of ${into.length} bytes`, { ...where, expected: into.length, found: at }));
      else finish();
    });
    res.on('aborted', () => finish(new Transient(`the connection closed after ${at} of ${into.length} bytes`)));
    res.on('error', (err) => finish(new Transient(`the connection failed after ${at} of ${into.length} bytes: ${err.message}`)));
    res.on('close', () => {
      if (!res.complete) finish(new Transient(`the connection closed after ${at} of ${into.length} bytes`));
    });
  });
}
