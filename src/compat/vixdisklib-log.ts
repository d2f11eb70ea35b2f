/**
 * VixDiskLib's log, warning and panic callbacks and InitEx's config file.
 *
 * The config file (VDDK guide, "Initialize Virtual Disk API"): `key = "value"` lines, `#`
 * comments. Keys the guide lists:
 * - tmpDirectory: the directory VDDK logs into. Every message that passes the log level is
 *   also appended to `vixDiskLib-<pid>.log` there; the directory must exist.
 * - vixDiskLib.transport.LogLevel: VMware's levels, 0 panic, 1 error, 2 warning, 3 audit,
 *   4 info, 5 verbose, 6 trivia (default 6: everything). A message goes out when its level
 *   is at most this one; panics always do.
 * - vixDiskLib.nfc.RequestTimeoutMs / ReadTimeoutMs / WriteTimeoutMs: the network (nbd,
 *   nbdssl) transports' timeouts. RequestTimeoutMs bounds connecting and the NBD handshake;
 *   the larger of ReadTimeoutMs and WriteTimeoutMs is how long a server may stay silent with
 *   requests in flight before the connection is taken as lost (one connection has one timer).
 * vdkit's own keys, for the nbdssl transport (vixdisklib-remote.ts):
 * - vdkit.nbd.tlsCertificates: a folder laid out as libnbd's tls-certificates= (ca-cert.pem,
 *   and client-cert.pem + client-key.pem for a server that asks for a client certificate).
 * - vdkit.nbd.tlsPskFile: a PSK file (psktool's username:hexkey lines); nbdssl then uses TLS-PSK
 *   with the identity connectParams.creds.uid.userName.
 * Other keys are ignored with a warning, as VDDK ignores what it does not know.
 *
 * Which callback gets what: info and audit lines go to `log`; warnings and failed calls
 * (each rejection, with its VIX name and number) to `warn`; vdkit's own bugs (INTERNAL) to
 * `panic` as well, which VDDK calls for fatal errors (here the call still rejects: a library
 * must not end its host process). A callback given as null falls back to `log`, as VDDK's
 * default handlers all write to the same log.
 */
import { join } from '../core/names.js';
import { hostAppendLine, hostFiles } from '../storage/file.js';
import { readText } from '../storage/namespace.js';
import { DiskError } from '../core/errors.js';

export type VixDiskLibGenericLogFunc = (message: string) => void;

export const VIX_LOG_PANIC = 0;
export const VIX_LOG_ERROR = 1;
export const VIX_LOG_WARNING = 2;
export const VIX_LOG_AUDIT = 3;
export const VIX_LOG_INFO = 4;
export const VIX_LOG_VERBOSE = 5;
export const VIX_LOG_TRIVIA = 6;

export interface VixDiskLibConfig {
  tmpDirectory?: string;
  /** vixDiskLib.transport.LogLevel */
  logLevel: number;
  /** vixDiskLib.nfc.*TimeoutMs: the nbd/nbdssl transports' timeouts */
  nfc: { requestTimeoutMs?: number; readTimeoutMs?: number; writeTimeoutMs?: number };
  /** vdkit.nbd.*: the nbdssl transport's credentials */
  nbd: { tlsCertificates?: string; tlsPskFile?: string };
}

export const DEFAULT_CONFIG: Readonly<VixDiskLibConfig> = Object.freeze({ logLevel: VIX_LOG_TRIVIA, nfc: {}, nbd: {} });

const NBD_KEYS: Record<string, keyof VixDiskLibConfig['nbd']> = {
  'vdkit.nbd.tlscertificates': 'tlsCertificates',
  'vdkit.nbd.tlspskfile': 'tlsPskFile',
};

const NFC_KEYS: Record<string, keyof VixDiskLibConfig['nfc']> = {
  'vixdisklib.nfc.requesttimeoutms': 'requestTimeoutMs',
  'vixdisklib.nfc.readtimeoutms': 'readTimeoutMs',
  'vixdisklib.nfc.writetimeoutms': 'writeTimeoutMs',
};

/**
 * Parse InitEx's config file. `notes` collects what the caller should log once the logger
 * exists (level, text): unknown keys, keys without effect. Keys match case-insensitively.
 */
export async function readConfigFile(path: string, notes: [number, string][]): Promise<VixDiskLibConfig> {
  const text = await readText(hostFiles(), path, 1024 * 1024).catch((err: unknown) => {
    // the Disk API calls a path that is no regular file "not a virtual disk"; this one is no disk
    if (err instanceof DiskError && err.code === 'INVALIDDISK') throw new DiskError('INVAL', 'the config file is not a regular file', { path, field: 'configFile' }, { cause: err });
    throw err;
  });
  const cfg: VixDiskLibConfig = { logLevel: DEFAULT_CONFIG.logLevel, nfc: {}, nbd: {} };
  const bad = (line: number, field: string, message: string, found: unknown) => new DiskError('INVAL', `config file line ${line}: ${message}`, { path, field, found });
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z0-9_.]+)\s*=\s*(?:"([^"]*)"|([^#\s]*))\s*(?:#.*)?$/.exec(line);
    if (!m) throw bad(i + 1, 'line', 'expected key = "value"', raw);
    const key = m[1]!;
    const value = m[2] ?? m[3] ?? '';
    const lower = key.toLowerCase();
    if (lower === 'tmpdirectory') {
      const isDir = (await hostFiles().kind(value)) === 'dir';
      if (!isDir) throw bad(i + 1, key, 'tmpDirectory must name an existing directory', value);
      cfg.tmpDirectory = value;
    } else if (lower === 'vixdisklib.transport.loglevel') {
      const n = Number(value);
      if (!/^\d+$/.test(value) || n > VIX_LOG_TRIVIA) throw bad(i + 1, key, `a log level is a whole number from 0 to ${VIX_LOG_TRIVIA}`, value);
      cfg.logLevel = n;
    } else if (lower in NFC_KEYS) {
      if (!/^\d+$/.test(value)) throw bad(i + 1, key, 'a timeout is a whole number of milliseconds', value);
      cfg.nfc[NFC_KEYS[lower]!] = Number(value);
    } else if (lower in NBD_KEYS) {
      // read when nbdssl first connects, so a missing file fails that Open, naming it
      if (value === '') throw bad(i + 1, key, 'expected a path', value);
      cfg.nbd[NBD_KEYS[lower]!] = value;
    } else {
      notes.push([VIX_LOG_WARNING, `VixDiskLib: config file ${path} line ${i + 1}: unknown key ${key} ignored`]);
    }
  }
  return cfg;
}

export interface VixLogFuncs {
  log?: VixDiskLibGenericLogFunc | null;
  warn?: VixDiskLibGenericLogFunc | null;
  panic?: VixDiskLibGenericLogFunc | null;
}

/** Routes a message by level to the callbacks and the tmpDirectory log file. */
export class VixLogger {
  private readonly file: string | undefined;

  constructor(
    private readonly funcs: VixLogFuncs,
    private readonly config: Readonly<VixDiskLibConfig> = DEFAULT_CONFIG,
  ) {
    this.file = config.tmpDirectory ? join(config.tmpDirectory, `vixDiskLib-${process.pid}.log`) : undefined;
  }

  /** whether a message of this level would reach anyone */
  wants(level: number): boolean {
    if (level > this.config.logLevel && level !== VIX_LOG_PANIC) return false;
    return !!(this.file || this.funcs.log || (level <= VIX_LOG_WARNING && (this.funcs.warn || (level === VIX_LOG_PANIC && this.funcs.panic))));
  }

  emit(level: number, message: string): void {
    if (level > this.config.logLevel && level !== VIX_LOG_PANIC) return;
    const fn = level === VIX_LOG_PANIC ? (this.funcs.panic ?? this.funcs.warn ?? this.funcs.log) : level <= VIX_LOG_WARNING ? (this.funcs.warn ?? this.funcs.log) : this.funcs.log;
    if (this.file) {
      try {
        hostAppendLine(this.file, `${new Date().toISOString()} ${message}`);
      } catch {
        // a log that cannot be written must not fail the call being logged
      }
    }
    try {
      fn?.(message);
    } catch {
      // nor may a callback that throws
    }
  }
}
