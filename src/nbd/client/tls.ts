/**
 * TLS for the NBD client: credentials laid out as libnbd and qemu read them, and the upgrade of
 * the plain socket after NBD_OPT_STARTTLS is acknowledged.
 *
 * - X.509 (`tls-certificates=DIR`): ca-cert.pem (the CA the server's certificate must chain to;
 *   without it the system's CAs), and optionally client-cert.pem + client-key.pem for a server
 *   that asks for a client certificate. The server's name is checked against its certificate
 *   when the URI names a host (or `tls-hostname=`); over a Unix socket there is no name to check
 *   and only the chain is verified.
 * - PSK (`tls-psk-file=FILE`): psktool's `username:hexkey` lines; the identity is
 *   `tls-username=`, else the URI's user, else the login name (libnbd's default). TLS 1.3 PSK
 *   works with Node's default ciphers; TLS 1.2 PSK needs the PSK suites named.
 *
 * The PSK file reader is shared with the server (nbd/server/tls.ts imports it).
 */
import tls from 'node:tls';
import { userInfo } from 'node:os';
import type { Socket } from 'node:net';
import { DiskError } from '../../core/errors.js';
import { join } from '../../core/names.js';
import { hostFiles } from '../../storage/file.js';
import { readText } from '../../storage/namespace.js';
import type { NbdUri } from './uri.js';

const PSK_LINE = /^([^:\s]+):([0-9a-fA-F]+)$/;
export const PSK_TLS12_SUITES = 'ECDHE-PSK-CHACHA20-POLY1305:PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305';

/** a PSK file (username:hexkey lines) as identity -> key */
export async function readPskFile(path: string): Promise<Map<string, Buffer>> {
  const text = await readText(hostFiles(), path, 1024 * 1024).catch((err) => {
    throw new DiskError('FILENOTFOUND', 'cannot read the PSK file', { path }, { cause: err });
  });
  const psk = new Map<string, Buffer>();
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '' || line.startsWith('#')) return;
    const m = PSK_LINE.exec(line.trim());
    if (!m || m[2]!.length % 2 !== 0) throw new DiskError('INVAL', `line ${i + 1} is not username:hexkey`, { path, field: `line ${i + 1}` });
    psk.set(m[1]!, Buffer.from(m[2]!, 'hex'));
  });
  if (psk.size === 0) throw new DiskError('INVAL', 'the PSK file holds no username:hexkey line', { path });
  return psk;
}

/** what the client presents and checks; built once per namespace */
export interface ClientTls {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  psk?: { identity: string; key: Buffer };
  /** the name the server certificate must carry; undefined: chain only */
  hostname?: string;
  verifyPeer: boolean;
  /**
   * the server certificate's own fingerprint (VixDiskLib's thumbPrint): when set it is the
   * whole check, as a pinned self-signed certificate has no chain or name to verify
   */
  pin?: { algorithm: 'sha1' | 'sha256'; hex: string };
}

const readSmall = async (path: string) => Buffer.from(await readText(hostFiles(), path, 1024 * 1024), 'utf8');

/** the TLS settings a parsed URI asks for, or undefined for a plain connection */
export async function clientTlsFor(uri: NbdUri): Promise<ClientTls | undefined> {
  if (!uri.tls) return undefined;
  const hostname = uri.tlsHostname ?? uri.host;
  if (uri.tlsPskFile) {
    const keys = await readPskFile(uri.tlsPskFile);
    const identity = uri.tlsUsername ?? userInfo().username;
    const key = keys.get(identity);
    if (!key) throw new DiskError('NEEDKEY', `the PSK file has no key for user ${JSON.stringify(identity)} (set tls-username=)`, { path: uri.tlsPskFile, field: 'tls-username', found: identity });
    return { psk: { identity, key }, verifyPeer: uri.tlsVerifyPeer };
  }
  const out: ClientTls = { hostname, verifyPeer: uri.tlsVerifyPeer };
  if (uri.tlsCertificates) {
    const dir = uri.tlsCertificates;
    out.ca = await readSmall(join(dir, 'ca-cert.pem')).catch(() => undefined);
    const cert = await readSmall(join(dir, 'client-cert.pem')).catch(() => undefined);
    const key = await readSmall(join(dir, 'client-key.pem')).catch(() => undefined);
    if (!!cert !== !!key) throw new DiskError('FILENOTFOUND', `TLS certificates folder has ${cert ? 'client-cert.pem but no client-key.pem' : 'client-key.pem but no client-cert.pem'}`, { path: dir });
    if (!out.ca && !cert) throw new DiskError('FILENOTFOUND', 'TLS certificates folder has neither ca-cert.pem nor client-cert.pem', { path: dir });
    out.cert = cert;
    out.key = key;
  }
  return out;
}

/** run the client side of a TLS handshake on `raw` (after STARTTLS's ACK) */
export function upgradeClient(raw: Socket, c: ClientTls, label: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const opts: tls.ConnectionOptions = { socket: raw, minVersion: 'TLSv1.2' };
    if (c.psk) {
      const { identity, key } = c.psk;
      opts.ciphers = `${tls.DEFAULT_CIPHERS}:${PSK_TLS12_SUITES}`;
      opts.pskCallback = () => ({ identity, psk: key });
      // the key itself authenticates the server: there is no certificate to check
      opts.checkServerIdentity = () => undefined;
    } else if (c.pin) {
      opts.cert = c.cert;
      opts.key = c.key;
      // Node checks a name only after the chain verified; the pin is compared on secureConnect
      opts.rejectUnauthorized = false;
      opts.checkServerIdentity = () => undefined;
      if (c.hostname !== undefined && !/^[\d.]+$|:/.test(c.hostname)) opts.servername = c.hostname;
    } else {
      opts.ca = c.ca;
      opts.cert = c.cert;
      opts.key = c.key;
      opts.rejectUnauthorized = c.verifyPeer;
      if (c.hostname !== undefined && !/^[\d.]+$|:/.test(c.hostname)) opts.servername = c.hostname;
      if (c.hostname === undefined) opts.checkServerIdentity = () => undefined;
      else {
        const name = c.hostname;
        opts.checkServerIdentity = (_host, cert) => tls.checkServerIdentity(name, cert);
      }
    }
    const s = tls.connect(opts);
    const fail = (err: Error) => {
      s.destroy();
      reject(new DiskError('FILEIO', `TLS handshake with the server failed: ${err.message}`, { path: label, field: 'tls' }, { cause: err }));
    };
    s.once('error', fail);
    s.once('close', () => reject(new DiskError('FILEIO', 'the server closed the connection during the TLS handshake', { path: label, field: 'tls' })));
    s.once('secureConnect', () => {
      if (c.pin) {
        const cert = s.getPeerCertificate();
        const seen = ((c.pin.algorithm === 'sha1' ? cert?.fingerprint : cert?.fingerprint256) ?? '').replace(/:/g, '').toLowerCase();
        if (seen !== c.pin.hex) {
          s.destroy();
          reject(new DiskError('FILEIO', `the server's certificate does not match the thumbprint (${c.pin.algorithm} ${seen || 'none'})`, { path: label, field: 'thumbPrint', expected: c.pin.hex, found: seen }));
          return;
        }
      }
      s.off('error', fail);
      resolve(s);
    });
  });
}
