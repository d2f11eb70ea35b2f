/**
 * VixDiskLib's LAN transports, nbd and nbdssl, through vdkit's NBD client: a connection made
 * with a serverName opens each disk as an NBD export of that server (Open's path is the export
 * name), so a VDDK backup program runs against `vdkit serve`, qemu-nbd or nbdkit with only its
 * connection parameters changed.
 *
 * Design notes
 * - Transport list (ConnectEx's transportModes, colon-separated, in order of preference): VDDK
 *   tries the modes in order and uses the first that works, and so does Open here, per disk.
 *   `file` is local files (as without a server), `nbd` plain NBD, `nbdssl` NBD over TLS; san
 *   and hotadd are VDDK modes this library cannot offer (skipped, as an unavailable mode is
 *   under VDDK: ConnectEx accepts it and Open fails if nothing else is left). Without a list,
 *   a connection with a serverName uses VDDK's network default minus san/hotadd: nbdssl:nbd
 *   (so a server without TLS is still reached, in plain text; pass "nbdssl" alone to forbid
 *   that). When every mode fails, Open rejects with the last mode's error (the one that got
 *   furthest down the caller's list); each failure before it goes to the log callback.
 * - The server: connectParams.serverName and port (the NBD default 10809 when the port is 0 or
 *   absent: VDDK's 902 is VMware's NFC port, which no NBD server listens on). A serverName
 *   starting with '/' is a Unix socket path (vdkit's extension, for local servers).
 *   vmxSpec, snapshotRef and the password have no meaning over NBD and are not sent.
 * - An export is a raw disk: the format is never detected (a VDDK program sees the virtual
 *   disk's contents, as through nbdkit-vddk), GetInfo reports its capacity with no geometry,
 *   adapter or parent, GetMetadataKeys is empty and WriteMetadata is not supported.
 * - nbdssl trust, strongest first: connectParams.thumbPrint (the server certificate's SHA-1,
 *   VDDK's form, or SHA-256 fingerprint, hex with or without colons) pins the certificate, and
 *   then it is the only check (ESX certificates are self-signed); else the certificate must
 *   chain to the CA in the config file's vdkit.nbd.tlsCertificates folder (ca-cert.pem, as
 *   libnbd lays it out) or, without one, to the system's CAs, and carry serverName. That
 *   folder's client-cert.pem/client-key.pem are presented when present. With
 *   vdkit.nbd.tlsPskFile in the config file, nbdssl is TLS-PSK instead, the identity
 *   creds.uid.userName (else the login name).
 * - Errors (vix.h numbers): refused -> VIX_E_HOST_NETWORK_CONN_REFUSED; unknown host (or no
 *   socket at the path) -> VIX_E_HOST_SERVER_NOT_FOUND; another socket error while connecting
 *   -> VIX_E_HOST_TCP_SOCKET_ERROR; a failed NBD or TLS handshake (a thumbprint mismatch
 *   included) -> VIX_E_HOST_NETBLKDEV_HANDSHAKE; no such export -> VIX_E_DISK_FILENOTFOUND; a
 *   connection that drops (or a server silent past the read/write timeout) while a disk is
 *   open -> VIX_E_HOST_TCP_CONN_LOST naming the server, for that call and every later one on the
 *   handle (the NBD client never reconnects, so no write is reported done that the server did
 *   not acknowledge). An error the server returns for one request stays VIX_E_DISK_FILEIO.
 */
import { userInfo } from 'node:os';
import { DiskError } from '../core/errors.js';
import { Disk } from '../disk.js';
import type { ClientTls } from '../nbd/client/tls.js';
import { VixDiskLibError, vixFail as fail, type VixErrorName } from './vixdisklib-errors.js';
import type { VixDiskLibConfig } from './vixdisklib-log.js';
import type { VixDiskLibConnectParams } from './vixdisklib-types.js';

/** what ListTransportModes reports: the modes this library can use */
export const TRANSPORT_MODES = ['file', 'nbd', 'nbdssl'] as const;
export type TransportMode = (typeof TRANSPORT_MODES)[number];
/** VDDK's modes that need VMware's own infrastructure */
const VMWARE_ONLY = new Set(['san', 'hotadd']);

/** the server a remote connection's disks are exports of */
export interface RemoteServer {
  /** host name or address, or a Unix socket path */
  serverName: string;
  port?: number;
  thumbPrint?: string;
  userName?: string;
  /** for messages: nbd://host:port or the socket path */
  label: string;
}

export function remoteServerOf(params: VixDiskLibConnectParams): RemoteServer | undefined {
  const serverName = params.serverName;
  if (!serverName) return undefined;
  const port = params.port || undefined;
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) {
    throw fail('INVAL', 'VIX_E_DISK_INVAL', 'port must be a TCP port number (0 for the NBD default, 10809)', { field: 'port', found: params.port });
  }
  const socket = serverName.startsWith('/');
  const label = socket ? serverName : `${serverName.includes(':') ? `[${serverName}]` : serverName}:${port ?? 10809}`;
  return { serverName, port, thumbPrint: params.thumbPrint ?? undefined, userName: params.creds?.uid?.userName ?? undefined, label };
}

/**
 * ConnectEx's transportModes as the modes to try, in order. A local connection (no
 * serverName) has only `file`; a list without it is refused there, since nothing else could
 * ever open. Unknown names are refused: a typo would otherwise fail every Open.
 */
export function transportList(modes: string | null | undefined, remote: boolean): string[] {
  if (!modes) return remote ? ['nbdssl', 'nbd'] : ['file'];
  const list = modes
    .split(':')
    .map((m) => m.trim().toLowerCase())
    .filter((m) => m !== '');
  for (const m of list) {
    if (!(TRANSPORT_MODES as readonly string[]).includes(m) && !VMWARE_ONLY.has(m)) {
      throw fail('INVAL', 'VIX_E_DISK_INVAL', `unknown transport mode ${JSON.stringify(m)} (known: ${[...TRANSPORT_MODES, ...VMWARE_ONLY].join(', ')})`, { field: 'transportModes', found: modes });
    }
  }
  if (!remote && !list.includes('file')) {
    throw fail('NOTSUPPORTED', 'VIX_E_DISK_NOTSUPPORTED', `transport modes ${modes}: without connectParams.serverName only "file" can open a disk`, { field: 'transportModes', found: modes });
  }
  return list;
}

/** whether `mode` can be tried here (san and hotadd cannot) */
export function usable(mode: string): mode is TransportMode {
  return (TRANSPORT_MODES as readonly string[]).includes(mode);
}

/** the NBD URI of `exportName` on `server` (plain or TLS scheme; no credentials) */
function uriOf(server: RemoteServer, exportName: string, tls: boolean): string {
  const path = encodeURIComponent(exportName).replace(/%2F/gi, '/');
  if (server.serverName.startsWith('/')) return `${tls ? 'nbds' : 'nbd'}+unix:///${path}?socket=${encodeURIComponent(server.serverName).replace(/%2F/gi, '/')}`;
  const host = server.serverName.includes(':') ? `[${server.serverName}]` : server.serverName;
  return `${tls ? 'nbds' : 'nbd'}://${host}:${server.port ?? 10809}/${path}`;
}

/** a thumbprint as the fingerprint to pin: 20 bytes are SHA-1 (VDDK's), 32 SHA-256 */
function pinOf(thumbPrint: string): NonNullable<ClientTls['pin']> {
  const hex = thumbPrint.replace(/[:\s]/g, '').toLowerCase();
  if (/^[0-9a-f]{40}$/.test(hex)) return { algorithm: 'sha1', hex };
  if (/^[0-9a-f]{64}$/.test(hex)) return { algorithm: 'sha256', hex };
  throw fail('INVAL', 'VIX_E_DISK_INVAL', 'thumbPrint must be the SHA-1 (20 bytes) or SHA-256 (32 bytes) fingerprint of the server certificate, in hex', { field: 'thumbPrint', found: thumbPrint });
}

/** nbdssl's TLS settings (see the design notes for the order of trust) */
async function tlsFor(server: RemoteServer, uri: string, config: Readonly<VixDiskLibConfig>): Promise<ClientTls> {
  const { parseNbdUri } = await import('../nbd/client/uri.js');
  const { clientTlsFor, readPskFile } = await import('../nbd/client/tls.js');
  const u = parseNbdUri(uri);
  if (config.nbd.tlsPskFile) {
    const keys = await readPskFile(config.nbd.tlsPskFile);
    const identity = server.userName || userInfo().username;
    const key = keys.get(identity);
    if (!key) throw new DiskError('NEEDKEY', `the PSK file has no key for ${JSON.stringify(identity)} (connectParams.creds.uid.userName)`, { path: config.nbd.tlsPskFile, field: 'userName', found: identity });
    return { psk: { identity, key }, verifyPeer: true };
  }
  const tls = (await clientTlsFor({ ...u, tlsCertificates: config.nbd.tlsCertificates }))!;
  if (server.thumbPrint) tls.pin = pinOf(server.thumbPrint);
  return tls;
}

/** open `exportName` on `server` over one network mode, as a raw disk */
export async function openOverNbd(server: RemoteServer, mode: 'nbd' | 'nbdssl', exportName: string, readOnly: boolean, config: Readonly<VixDiskLibConfig>): Promise<Disk> {
  const { NbdNamespace } = await import('../nbd/client/namespace.js');
  const { parseNbdUri } = await import('../nbd/client/uri.js');
  const uri = uriOf(server, exportName, mode === 'nbdssl');
  const tls = mode === 'nbdssl' ? await tlsFor(server, uri, config) : undefined;
  const { requestTimeoutMs, readTimeoutMs, writeTimeoutMs } = config.nfc;
  const idle = readTimeoutMs === undefined && writeTimeoutMs === undefined ? undefined : Math.max(readTimeoutMs ?? 0, writeTimeoutMs ?? 0);
  const u = parseNbdUri(uri);
  const namespace = NbdNamespace.forServer(u, tls, { handshakeTimeoutMs: requestTimeoutMs, idleTimeoutMs: idle });
  try {
    return await Disk.open(u.display, { namespace, format: 'raw', readOnly });
  } catch (err) {
    throw openError(err, server, mode);
  }
}

/** the system error code (ECONNREFUSED, ...) behind a DiskError, if one caused it */
function systemCode(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (!(e instanceof DiskError) && typeof e.code === 'string') return e.code;
  }
  return undefined;
}

const CONNECT_ERRORS: Record<string, VixErrorName> = {
  ECONNREFUSED: 'VIX_E_HOST_NETWORK_CONN_REFUSED',
  ENOTFOUND: 'VIX_E_HOST_SERVER_NOT_FOUND',
  EAI_AGAIN: 'VIX_E_HOST_SERVER_NOT_FOUND',
  EAI_NONAME: 'VIX_E_HOST_SERVER_NOT_FOUND',
  EAI_FAIL: 'VIX_E_HOST_SERVER_NOT_FOUND',
  // a Unix socket path where nothing listens
  ENOENT: 'VIX_E_HOST_SERVER_NOT_FOUND',
};

/** socket errors other than CONNECT_ERRORS' while connecting */
const SOCKET_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED', 'EADDRNOTAVAIL', 'EACCES']);

/** `err` under a network VIX name, its message led by `what` (the details stay as they were) */
function remoteError(err: DiskError, vixCode: VixErrorName, what: string): VixDiskLibError {
  const e = new VixDiskLibError(err, vixCode);
  e.message = `${what}: ${err.message}`;
  return e;
}

/** an Open's failure over NBD as VDDK reports it (the design notes' table) */
function openError(err: unknown, server: RemoteServer, mode: string): unknown {
  // FILENOTFOUND (no such export), RDONLY, NEEDKEY, ... keep their own VIX names
  if (!(err instanceof DiskError) || err.code !== 'FILEIO') return err;
  // a TLS failure carries OpenSSL's code (SELF_SIGNED_CERT_IN_CHAIN, ...): it is the handshake's
  const sys = err.details.field === 'tls' || err.details.field === 'thumbPrint' ? undefined : systemCode(err);
  const vixCode = (sys && (CONNECT_ERRORS[sys] ?? (SOCKET_ERRORS.has(sys) ? 'VIX_E_HOST_TCP_SOCKET_ERROR' : undefined))) || 'VIX_E_HOST_NETBLKDEV_HANDSHAKE';
  return remoteError(err, vixCode, `${mode} transport to ${server.label}`);
}

/**
 * An error from a call on an open NBD disk: a connection that ended (dropped, closed by the
 * server, a protocol violation, silence past the timeout) is VIX_E_HOST_TCP_CONN_LOST naming
 * the server; an error the server answered one request with (it has an offset) is left as it is.
 */
export function ioError(err: unknown, server: RemoteServer): unknown {
  if (!(err instanceof DiskError) || err instanceof VixDiskLibError) return err;
  if ((err.code !== 'FILEIO' && err.code !== 'CLOSED') || err.details.offset !== undefined) return err;
  return remoteError(err, 'VIX_E_HOST_TCP_CONN_LOST', `the connection to the NBD server ${server.label} was lost`);
}
