/**
 * TLS for NBD_OPT_STARTTLS: credentials as qemu and nbdkit lay them out, and the in-band upgrade
 * of an already connected socket (Node's tls.TLSSocket over the plain socket).
 *
 * - X.509: a folder with server-cert.pem and server-key.pem, and optionally ca-cert.pem; with a
 *   CA the client must present a certificate it signed (qemu's verify-peer default for a
 *   folder holding a CA).
 * - PSK: a file of `username:hexkey` lines (psktool's format, read by nbdkit --tls-psk and
 *   qemu's tls-creds-psk). TLS 1.3 PSK works with Node's default ciphers; TLS 1.2 PSK needs the
 *   PSK suites named, which Node leaves out by default. The PSK file reader is the client's.
 */
import { join } from '../../core/names.js';
import { hostFiles } from '../../storage/file.js';
import { readText } from '../../storage/namespace.js';

/** a small host text file (certificates, keys, PSK lists) as bytes */
const readSmall = async (path: string) => Buffer.from(await readText(hostFiles(), path, 1024 * 1024), 'utf8');
import tls from 'node:tls';
import type { Socket } from 'node:net';
import { DiskError } from '../../core/errors.js';
import { PSK_TLS12_SUITES, readPskFile } from '../client/tls.js';

export type TlsMode = 'off' | 'on' | 'require';

export interface TlsCredentials {
  /** X.509 */
  cert?: Buffer;
  key?: Buffer;
  /** client certificates must be signed by this CA */
  ca?: Buffer;
  /** PSK identities and keys */
  psk?: Map<string, Buffer>;
}

export interface TlsOptions extends TlsCredentials {
  mode: TlsMode;
}

export async function loadX509Dir(dir: string): Promise<TlsCredentials> {
  const need = async (name: string) => {
    try {
      return await readSmall(join(dir, name));
    } catch (err) {
      throw new DiskError('FILENOTFOUND', `TLS credentials folder has no ${name}`, { path: join(dir, name) }, { cause: err });
    }
  };
  const cert = await need('server-cert.pem');
  const key = await need('server-key.pem');
  const ca = await readSmall(join(dir, 'ca-cert.pem')).catch(() => undefined);
  return { cert, key, ca };
}

export async function loadPskFile(path: string): Promise<TlsCredentials> {
  return { psk: await readPskFile(path) };
}

/** Node's server options for these credentials (built once per server) */
export function serverContextOptions(c: TlsCredentials): tls.TLSSocketOptions {
  if (c.psk) {
    const keys = c.psk;
    return {
      isServer: true,
      minVersion: 'TLSv1.2',
      ciphers: `${tls.DEFAULT_CIPHERS}:${PSK_TLS12_SUITES}`,
      pskCallback: (_socket: tls.TLSSocket, identity: string) => keys.get(identity) ?? null,
    } as tls.TLSSocketOptions;
  }
  if (!c.cert || !c.key) throw new DiskError('INVAL', 'TLS needs a certificate and key, or a PSK file');
  const secureContext = tls.createSecureContext({ cert: c.cert, key: c.key, ca: c.ca, minVersion: 'TLSv1.2' });
  return { isServer: true, secureContext, requestCert: !!c.ca, rejectUnauthorized: !!c.ca };
}

/** run the server side of a TLS handshake on `raw`; rejects on any failure */
export function upgradeToTls(raw: Socket, opts: tls.TLSSocketOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = new tls.TLSSocket(raw, opts);
    const fail = (err: Error) => {
      s.destroy();
      reject(err);
    };
    s.once('error', fail);
    s.once('close', () => reject(new DiskError('FILEIO', 'connection closed during the TLS handshake')));
    s.once('secure', () => {
      s.off('error', fail);
      resolve(s);
    });
  });
}
