/**
 * What one HTTP object is (size, validators, where it really lives after redirects) and ranged
 * reads of it that refuse anything but exactly the bytes asked for, of exactly that version.
 *
 * Version: a strong ETag is sent back as If-Match (a change answers 412) and If-Range (a
 * change answers 200 with the whole object); a weak ETag or a Last-Modified date as
 * If-Unmodified-Since. Every 206 must also name the same total size and, when it carries
 * them, the same ETag and Last-Modified. A change is a DiskError, never mixed data.
 */
import { DiskError } from '../../core/errors.js';
import { HttpClient, Transient, discard, readBodyInto, type Reply } from './client.js';
import { displayUrl } from './url.js';

/** whole objects up to this size are taken from a server that ignores Range (no larger body is read) */
export const TINY_OBJECT = 1024 * 1024;

export interface ObjectFacts {
  /** the URL as given (without credentials), for messages */
  display: string;
  /** where GETs go: the URL after the redirects of the first request */
  url: URL;
  size: number;
  etag?: string;
  lastModified?: string;
  /** the whole object, when the server ignores Range and the object is tiny */
  whole?: Buffer;
}

function header(h: Reply['headers'], name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

function statusError(status: number, display: string, what: string): DiskError {
  if (status === 404 || status === 410) return new DiskError('FILENOTFOUND', `${what}: the server answered ${status}`, { path: display, field: 'status', found: status });
  if (status === 401 || status === 403) return new DiskError('FILENOPERMISSION', `${what}: the server answered ${status}`, { path: display, field: 'status', found: status });
  return new DiskError('FILEIO', `${what}: unexpected answer ${status}`, { path: display, field: 'status', found: status });
}

/** a decimal header that must be a safe integer */
function sizeHeader(v: string | undefined, display: string, field: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,16}$/.test(v.trim()) || !Number.isSafeInteger(Number(v))) throw new DiskError('FILEIO', `${field} is not a byte count`, { path: display, field, found: v.slice(0, 40) });
  return Number(v);
}

/** "bytes a-b/total" (total may be "*"), or "bytes *∕total" on 416 */
export function parseContentRange(v: string | undefined, display: string): { start?: number; end?: number; total?: number } {
  const m = v === undefined ? null : /^\s*bytes\s+(?:(\d{1,16})-(\d{1,16})|\*)\/(\d{1,16}|\*)\s*$/i.exec(v);
  if (!m) throw new DiskError('FILEIO', 'Content-Range is missing or malformed', { path: display, field: 'Content-Range', found: v?.slice(0, 80) });
  const n = (s: string | undefined) => (s === undefined || s === '*' ? undefined : Number(s));
  const r = { start: n(m[1]), end: n(m[2]), total: n(m[3]) };
  if (r.start !== undefined && r.end !== undefined && r.end < r.start) throw new DiskError('FILEIO', 'Content-Range ends before it starts', { path: display, field: 'Content-Range', found: v });
  return r;
}

const strong = (etag: string | undefined) => (etag !== undefined && !etag.startsWith('W/') ? etag : undefined);

/**
 * Learn an object's size and version: HEAD, or, when HEAD is refused (405, 501, or 403 as a URL
 * signed for GET only answers), a GET of byte 0.
 */
export async function probeObject(client: HttpClient, url: URL): Promise<ObjectFacts> {
  const display = displayUrl(url);
  const head = await client.withRetries('HEAD', url, () => client.send('HEAD', url, {}));
  discard(head.res);
  if (head.status === 200) {
    const size = sizeHeader(header(head.headers, 'content-length'), display, 'Content-Length');
    if (size !== undefined) return { display, url: head.url, size, etag: header(head.headers, 'etag'), lastModified: header(head.headers, 'last-modified') };
  } else if (![403, 405, 501].includes(head.status)) {
    throw statusError(head.status, display, 'HEAD');
  }
  return client.withRetries('GET', url, async () => {
    const r = await client.send('GET', url, { range: 'bytes=0-0' });
    const etag = header(r.headers, 'etag');
    const lastModified = header(r.headers, 'last-modified');
    if (r.status === 206) {
      const cr = parseContentRange(header(r.headers, 'content-range'), display);
      discard(r.res);
      if (cr.start !== 0 || cr.end !== 0 || cr.total === undefined) throw new DiskError('FILEIO', 'Content-Range does not answer bytes=0-0 with a size', { path: display, field: 'Content-Range', found: header(r.headers, 'content-range') });
      return { display, url: r.url, size: cr.total, etag, lastModified };
    }
    if (r.status === 416) {
      // an empty object: no byte 0 to send
      const cr = parseContentRange(header(r.headers, 'content-range'), display);
      discard(r.res);
      if (cr.total !== 0) throw new DiskError('FILEIO', 'byte 0 is not satisfiable but the object is not empty', { path: display, field: 'Content-Range', found: header(r.headers, 'content-range') });
      return { display, url: r.url, size: 0, etag, lastModified };
    }
    if (r.status === 200) {
      const size = sizeHeader(header(r.headers, 'content-length'), display, 'Content-Length');
      if (size === undefined || size > TINY_OBJECT) {
        discard(r.res);
        throw ignoresRange(display, size);
      }
      const whole = Buffer.allocUnsafe(size);
      await readBodyInto(r.res, whole, client.timeoutMs, { path: display, field: 'body' });
      return { display, url: r.url, size, etag, lastModified, whole };
    }
    discard(r.res);
    throw statusError(r.status, display, 'GET');
  });
}

function ignoresRange(display: string, size: number | undefined): DiskError {
  return new DiskError('NOTSUPPORTED', `the server ignores Range requests (it answered 200 with the whole object${size === undefined ? '' : `, ${size} bytes`}); vdkit reads only servers that send byte ranges (206), except for objects up to ${TINY_OBJECT} bytes`, { path: display, field: 'Range', expected: 206, found: 200 });
}

function changed(display: string, field: string, expected: unknown, found: unknown): DiskError {
  return new DiskError('FILEIO', 'the object changed while it was being read (its version differs from the first answer): reopen it to read the new version', { path: display, field, expected, found });
}

/** fill `into` with the bytes at `offset` of the object, of the version `facts` describes */
export async function readRange(client: HttpClient, facts: ObjectFacts, offset: number, into: Buffer): Promise<void> {
  const { display, url } = facts;
  if (facts.whole) {
    facts.whole.copy(into, 0, offset, offset + into.length);
    return;
  }
  const last = offset + into.length - 1;
  const headers: Record<string, string> = { range: `bytes=${offset}-${last}` };
  const tag = strong(facts.etag);
  if (tag) {
    headers['if-match'] = tag;
    headers['if-range'] = tag;
  } else if (facts.lastModified) {
    headers['if-unmodified-since'] = facts.lastModified;
  }
  await client.withRetries(`GET bytes ${offset}-${last}`, url, async () => {
    const r = await client.send('GET', url, headers);
    const etag = header(r.headers, 'etag');
    const lm = header(r.headers, 'last-modified');
    const where = { path: display, field: `body of bytes ${offset}-${last}` };
    if (r.status === 412) {
      discard(r.res);
      throw changed(display, 'ETag', facts.etag ?? facts.lastModified, etag ?? lm ?? 'precondition failed (412)');
    }
    if (r.status === 200 || r.status === 206) {
      if (facts.etag !== undefined && etag !== undefined && etag !== facts.etag) {
        discard(r.res);
        throw changed(display, 'ETag', facts.etag, etag);
      }
      if (facts.lastModified !== undefined && lm !== undefined && lm !== facts.lastModified) {
        discard(r.res);
        throw changed(display, 'Last-Modified', facts.lastModified, lm);
      }
    }
    if (r.status === 200) {
      discard(r.res);
      throw ignoresRange(display, sizeHeader(header(r.headers, 'content-length'), display, 'Content-Length'));
    }
    if (r.status === 416) {
      discard(r.res);
      throw changed(display, 'Content-Range', `bytes ${offset}-${last} inside ${facts.size}`, header(r.headers, 'content-range') ?? 'not satisfiable (416)');
    }
    if (r.status !== 206) {
      discard(r.res);
      throw statusError(r.status, display, 'GET');
    }
    const raw = header(r.headers, 'content-range');
    const cr = parseContentRange(raw, display);
    if (cr.total !== undefined && cr.total !== facts.size) {
      discard(r.res);
      throw changed(display, 'Content-Range', `total ${facts.size}`, raw);
    }
    if (cr.start !== offset || cr.end !== last) {
      discard(r.res);
      throw new DiskError('FILEIO', 'the server sent other bytes than asked for', { path: display, field: 'Content-Range', expected: `bytes ${offset}-${last}/${facts.size}`, found: raw });
    }
    const len = sizeHeader(header(r.headers, 'content-length'), display, 'Content-Length');
    if (len !== undefined && len !== into.length) {
      discard(r.res);
      throw new DiskError('FILEIO', 'Content-Length does not match the range', { path: display, field: 'Content-Length', expected: into.length, found: len });
    }
    await readBodyInto(r.res, into, client.timeoutMs, where);
  });
}

export { Transient };
