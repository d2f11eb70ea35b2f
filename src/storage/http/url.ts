/**
 * Names of the HTTP namespace. A name is a URL without credentials (`display`), so messages,
 * `--json` output and the chain layer's names never carry a password. The generic name code
 * (core/names.ts) joins names as POSIX paths, which turns "https://h/d" + "x" into
 * "https:/h/d/x": `parseName` takes that form back, so a name built either way opens.
 */
import { DiskError } from '../../core/errors.js';

const SCHEME = /^(https?):\/+/i;

/** true for http:// and https:// names */
export function isHttpUrl(name: string): boolean {
  return /^https?:\/\//i.test(name);
}

/** the URL as it may be printed: scheme, host, port, path and query, without user or password */
export function displayUrl(u: URL): string {
  return `${u.protocol}//${u.host}${u.pathname}${u.search}`;
}

/** scheme://host:port, the unit credentials and sockets belong to */
export function originOf(u: URL): string {
  return `${u.protocol}//${u.host}`;
}

/** parse an http(s) URL; the error names the URL without its credentials */
export function parseHttpUrl(text: string): URL {
  let u: URL;
  try {
    u = new URL(text.replace(SCHEME, (_m, s: string) => `${s}://`));
  } catch {
    throw new DiskError('INVAL', 'not a valid http(s) URL', { path: text.replace(/\/\/[^/@]*@/, '//'), field: 'url' });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new DiskError('INVAL', 'only http and https URLs are read', { path: displayUrl(u), field: 'scheme', found: u.protocol });
  u.hash = '';
  return u;
}

/** `name` (an absolute URL, the mangled "https:/h/x" form, a path on `base`'s host, or a name relative to `base`) as a URL */
export function parseName(name: string, base: URL): URL {
  if (SCHEME.test(name)) return parseHttpUrl(name);
  try {
    let u = new URL(name, base);
    // "c:x" or "json:{...}" would parse as a scheme of its own: here it is a file name beside base
    if (u.protocol !== 'http:' && u.protocol !== 'https:') u = new URL(`./${name}`, base);
    u.hash = '';
    return u;
  } catch {
    throw new DiskError('INVAL', 'not a valid name relative to the URL', { path: displayUrl(base), field: 'name', found: name });
  }
}

/** the Authorization header of a URL's user:password, or undefined */
export function basicAuth(u: URL): string | undefined {
  if (!u.username && !u.password) return undefined;
  const user = decodeURIComponent(u.username);
  const pass = decodeURIComponent(u.password);
  return `Basic ${Buffer.from(`${user}:${pass}`, 'utf8').toString('base64')}`;
}
