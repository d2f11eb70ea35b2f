/**
 * NBD URIs (NetworkBlockDevice doc/uri.md, as libnbd's nbd_connect_uri reads them):
 *
 *   nbd://host[:port]/export          TCP (port 10809 by default)
 *   nbds://host[:port]/export         TCP, TLS required
 *   nbd+unix:///export?socket=PATH    Unix socket (no authority)
 *   nbds+unix:///export?socket=PATH   Unix socket, TLS required
 *
 * The export name is the path after its first '/', percent-decoded ("nbd://h/" and "nbd://h"
 * both name the default export ""). Query parameters: `socket=`, `tls-certificates=DIR`
 * (ca-cert.pem, client-cert.pem, client-key.pem), `tls-psk-file=FILE` (username:hexkey lines),
 * `tls-username=` (or the URI's user part), `tls-hostname=` (the name the server certificate
 * must carry), `tls-verify-peer=false`. Unknown parameters are refused, so a typo does not
 * silently connect without the TLS the caller meant.
 *
 * `display` is the URI to print (messages, --json, Disk.path): the same server and export with
 * every credential-bearing part (user, tls-* parameters) left out.
 */
import { DiskError } from '../../core/errors.js';
import { DEFAULT_PORT, MAX_STRING } from '../protocol/constants.js';

export const NBD_SCHEMES = ['nbd', 'nbds', 'nbd+unix', 'nbds+unix'] as const;

export interface NbdUri {
  scheme: (typeof NBD_SCHEMES)[number];
  /** TCP host (IPv6 without brackets), or undefined for a Unix socket */
  host?: string;
  port?: number;
  /** Unix socket path */
  socket?: string;
  exportName: string;
  tls: boolean;
  tlsCertificates?: string;
  tlsPskFile?: string;
  tlsUsername?: string;
  tlsHostname?: string;
  /** false only when the URI says tls-verify-peer=false */
  tlsVerifyPeer: boolean;
  /** the URI without credentials, for messages and output */
  display: string;
  /** the server part of `display` (scheme, authority, socket), for comparing names of one server */
  server: string;
}

const KNOWN_PARAMS = new Set(['socket', 'tls-certificates', 'tls-psk-file', 'tls-username', 'tls-hostname', 'tls-verify-peer']);

/** true when `name` starts with one of the NBD schemes (a path cannot look like this) */
export function isNbdUri(name: string): boolean {
  return /^nbds?(\+unix)?:\/\//i.test(name);
}

function bad(uri: string, field: string, message: string, found?: unknown): DiskError {
  // the URI itself may carry credential file names: the message names only the field
  return new DiskError('INVAL', message, { path: redact(uri), struct: 'NBD URI', field, found });
}

/** a URI for an error message when it did not parse: scheme and authority only */
function redact(uri: string): string {
  const m = /^([a-z+]+:\/\/)([^/?#]*)/i.exec(uri);
  if (!m) return 'nbd URI';
  return `${m[1]}${m[2]!.replace(/^[^@]*@/, '')}`;
}

export function parseNbdUri(uri: string): NbdUri {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    throw bad(uri, 'uri', 'not a valid URI');
  }
  const scheme = u.protocol.slice(0, -1).toLowerCase() as NbdUri['scheme'];
  if (!(NBD_SCHEMES as readonly string[]).includes(scheme)) throw bad(uri, 'scheme', `unknown scheme (known: ${NBD_SCHEMES.join(', ')})`, scheme);
  const unix = scheme.endsWith('+unix');
  const tls = scheme.startsWith('nbds');
  const params = new Map<string, string>();
  for (const [k, v] of u.searchParams) {
    if (!KNOWN_PARAMS.has(k)) throw bad(uri, k, `unknown query parameter (known: ${[...KNOWN_PARAMS].join(', ')})`);
    if (params.has(k)) throw bad(uri, k, 'query parameter given twice');
    params.set(k, v);
  }
  let exportName: string;
  try {
    exportName = decodeURIComponent(u.pathname.startsWith('/') ? u.pathname.slice(1) : u.pathname);
  } catch {
    throw bad(uri, 'export', 'the export name is not valid percent-encoding');
  }
  if (Buffer.byteLength(exportName) > MAX_STRING) throw bad(uri, 'export', `the export name is longer than ${MAX_STRING} bytes`);
  if (exportName.includes('\0')) throw bad(uri, 'export', 'the export name holds a NUL byte');
  const verify = params.get('tls-verify-peer');
  if (verify !== undefined && !['true', 'false'].includes(verify)) throw bad(uri, 'tls-verify-peer', 'expected true or false', verify);
  const user = u.username ? decodeURIComponent(u.username) : undefined;
  if (u.password) throw bad(uri, 'password', 'an NBD URI carries no password (use tls-psk-file=)');
  if (!tls) for (const k of ['tls-certificates', 'tls-psk-file', 'tls-username']) if (params.has(k)) throw bad(uri, k, `${k} needs a TLS scheme (nbds:// or nbds+unix://)`);
  if (params.has('tls-certificates') && params.has('tls-psk-file')) throw bad(uri, 'tls-psk-file', 'give tls-certificates or tls-psk-file, not both');

  const path = `/${encodeURIComponent(exportName).replace(/%2F/gi, '/')}`;
  let out: NbdUri;
  if (unix) {
    if (u.host) throw bad(uri, 'host', `a ${scheme} URI has no host: write ${scheme}:///export?socket=PATH`, u.host);
    const socket = params.get('socket');
    if (!socket) throw bad(uri, 'socket', `a ${scheme} URI needs ?socket=PATH`);
    const server = `${scheme}://?socket=${encodeURIComponent(socket).replace(/%2F/gi, '/')}`;
    out = { scheme, socket, exportName, tls, tlsVerifyPeer: verify !== 'false', display: `${scheme}://${path}?socket=${encodeURIComponent(socket).replace(/%2F/gi, '/')}`, server };
  } else {
    if (params.has('socket')) throw bad(uri, 'socket', `socket= is for ${scheme}+unix:// URIs`);
    if (!u.hostname) throw bad(uri, 'host', 'the URI names no host');
    const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    const port = u.port ? Number(u.port) : DEFAULT_PORT;
    const authority = `${u.hostname}${u.port ? `:${u.port}` : ''}`;
    out = { scheme, host, port, exportName, tls, tlsVerifyPeer: verify !== 'false', display: `${scheme}://${authority}${path}`, server: `${scheme}://${authority}` };
  }
  out.tlsCertificates = params.get('tls-certificates');
  out.tlsPskFile = params.get('tls-psk-file');
  out.tlsUsername = params.get('tls-username') ?? user;
  out.tlsHostname = params.get('tls-hostname');
  return out;
}

/** the display URI of another export on the same server as `base` */
export function siblingDisplay(base: NbdUri, exportName: string): string {
  const path = `/${encodeURIComponent(exportName).replace(/%2F/gi, '/')}`;
  if (base.socket !== undefined) return base.display.replace(/^([a-z+]+:\/\/)[^?]*/i, `$1${path}`);
  return `${base.server}${path}`;
}
