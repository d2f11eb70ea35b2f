/**
 * What the VixDiskLib calls share (vixdisklib.ts, vixdisklib-admin.ts): the library's state
 * (Init, connections, handles), the call wrapper that turns failures into VixDiskLibErrors, and
 * the checks and conversions more than one call needs. Internal: vixdisklib.ts exports none of it.
 */
import { DiskError } from '../core/errors.js';
import { SECTOR_SIZE } from '../core/ints.js';
import { Disk, detectFormat } from '../disk.js';
import { toVixError, vixFail as fail } from './vixdisklib-errors.js';
import { DEFAULT_CONFIG, VIX_LOG_ERROR, VIX_LOG_INFO, VIX_LOG_PANIC, VIX_LOG_WARNING, VixLogger, type VixDiskLibConfig } from './vixdisklib-log.js';
import { ioError, openOverNbd, usable, type RemoteServer } from './vixdisklib-remote.js';
import {
  VIXDISKLIB_ADAPTER_IDE,
  VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC,
  VIXDISKLIB_ADAPTER_SCSI_LSILOGIC,
  VIXDISKLIB_ADAPTER_UNKNOWN,
  VIXDISKLIB_DISK_MONOLITHIC_FLAT,
  VIXDISKLIB_DISK_MONOLITHIC_SPARSE,
  VIXDISKLIB_DISK_SPLIT_FLAT,
  VIXDISKLIB_DISK_SPLIT_SPARSE,
  VIXDISKLIB_DISK_STREAM_OPTIMIZED,
  VIXDISKLIB_DISK_VMFS_FLAT,
  VIXDISKLIB_DISK_VMFS_SPARSE,
  VIXDISKLIB_DISK_VMFS_THIN,
  type VixDiskLibConnectParams,
  type VixDiskLibConnection,
  type VixDiskLibHandle,
  type VixDiskLibProgressFunc,
} from './vixdisklib-types.js';

/** run a call body, turning whatever it throws into a VixDiskLibError (reported to the warn callback) */
export async function call<T>(body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    const e = toVixError(err);
    const line = `VixDiskLib: ${e.vixCode} (${e.vixError}): ${e.message}${e.details.path ? ` [${e.details.path}]` : ''}`;
    log(line, VIX_LOG_ERROR);
    if (e.code === 'INTERNAL') log(line, VIX_LOG_PANIC);
    throw e;
  }
}

export interface ConnectionState {
  open: boolean;
  params: VixDiskLibConnectParams;
  /** ConnectEx(readOnly = true): every Open is read-only, and calls that write refuse */
  readOnly: boolean;
  /** the server whose NBD exports the disks are (connectParams.serverName) */
  remote?: RemoteServer;
  /** the transport modes to try, in order (vixdisklib-remote.ts) */
  modes: string[];
}

export interface HandleState {
  disk: Disk | undefined;
  connection: VixDiskLibConnection;
  /** the transport mode that opened it (GetTransportMode) */
  transport: string;
  /** set when it is an NBD export: errors of a dropped connection name this server */
  remote?: RemoteServer;
}

// ---------------------------------------------------------------------------------------------
// Library state

/** set by Init/InitEx/Exit: an object, since a module importing a `let` cannot assign it */
export const lib: { initialised: boolean; logger: VixLogger; config: Readonly<VixDiskLibConfig> } = {
  initialised: false,
  logger: new VixLogger({}),
  config: DEFAULT_CONFIG,
};
export const connections = new WeakMap<VixDiskLibConnection, ConnectionState>();
export const handles = new WeakMap<VixDiskLibHandle, HandleState>();

export function log(message: string, level = VIX_LOG_INFO): void {
  lib.logger.emit(level, message);
}

export function needInit(): void {
  if (!lib.initialised) throw fail('NOINIT', 'VIX_E_DISK_NOINIT', 'call VixDiskLib_Init first');
}

export function liveConnection(connection: VixDiskLibConnection): ConnectionState {
  needInit();
  const state = connection ? connections.get(connection) : undefined;
  if (!state || !state.open) throw fail('INVAL', 'VIX_E_DISK_INVALID_CONNECTION', 'not a connected VixDiskLib connection (Connect it, and do not use it after Disconnect)');
  return state;
}

/** a live connection that may write (not made by ConnectEx with readOnly) */
export function writableConnection(connection: VixDiskLibConnection, what: string, path: string): ConnectionState {
  const state = liveConnection(connection);
  if (state.readOnly) throw new DiskError('RDONLY', `${what} writes, and this connection was made read-only (VixDiskLib_ConnectEx with readOnly)`, { path, field: 'readOnly' });
  return localFiles(state, what, path);
}

/**
 * a connection whose names are local files: the calls that take a path and work on files
 * (Create, Grow, Unlink, CheckRepair, Clone's target) have no NBD counterpart, so a remote
 * connection refuses them unless its transport list has `file`
 */
export function localFiles(state: ConnectionState, what: string, path: string): ConnectionState {
  if (state.remote && !state.modes.includes('file')) {
    throw fail('NOTSUPPORTED', 'VIX_E_DISK_NOTSUPPORTED', `${what} works on local files, and this connection's disks are NBD exports of ${state.remote.label} (add "file" to the transport modes for local files)`, { path, field: 'transportModes', found: state.modes.join(':') });
  }
  return state;
}

/**
 * Open `path` by the connection's transport modes, the first that works (VDDK's order): `file`
 * a local disk image (raw data only with `raw`), `nbd`/`nbdssl` the export of that name on the
 * connection's server. When all fail, the last failure is thrown; the others are logged.
 */
export async function openByTransport(
  state: ConnectionState,
  path: string,
  opts: { readOnly: boolean; singleLink: boolean; raw: boolean },
): Promise<{ disk: Disk; transport: string; remote?: RemoteServer }> {
  const tried = state.modes.filter(usable).filter((m) => m === 'file' || state.remote);
  if (tried.length === 0) {
    throw fail('NOTSUPPORTED', 'VIX_E_DISK_NOTSUPPORTED', `none of the transport modes ${state.modes.join(':')} is available (this library offers file, nbd and nbdssl)`, { path, field: 'transportModes', found: state.modes.join(':') });
  }
  let last: unknown;
  for (const [i, mode] of tried.entries()) {
    try {
      if (mode === 'file') {
        // content that no format claims falls back to raw in the Disk API; VDDK refuses it, and a
        // Write would overwrite whatever the file holds
        if (!opts.raw) await needDiskImage(path, 'to open raw data, name it in a flat VMDK descriptor or pass VDKIT_FLAG_OPEN_RAW');
        const disk = await Disk.open(path, { readOnly: opts.readOnly, singleLink: opts.singleLink, format: opts.raw ? 'raw' : undefined });
        return { disk, transport: mode };
      }
      const disk = await openOverNbd(state.remote!, mode as 'nbd' | 'nbdssl', path, opts.readOnly, lib.config);
      log(`VixDiskLib: ${path} opened over ${mode} from ${state.remote!.label}`);
      return { disk, transport: mode, remote: state.remote };
    } catch (err) {
      last = err;
      if (i < tried.length - 1) log(`VixDiskLib: ${path}: transport ${mode} failed, trying ${tried[i + 1]}: ${(err as Error)?.message ?? String(err)}`, VIX_LOG_WARNING);
    }
  }
  throw last;
}

/** call() for a call on an open handle: over NBD, a dropped connection is reported as such */
export function ioCall<T>(handle: VixDiskLibHandle, body: () => Promise<T>): Promise<T> {
  return call(async () => {
    try {
      return await body();
    } catch (err) {
      const remote = handle ? handles.get(handle)?.remote : undefined;
      throw remote ? ioError(err, remote) : err;
    }
  });
}

export function liveDisk(handle: VixDiskLibHandle): Disk {
  const state = handle ? handles.get(handle) : undefined;
  if (!state) throw fail('INVAL', 'VIX_E_DISK_INVAL', 'not a disk handle from VixDiskLib_Open');
  if (!state.disk) throw new DiskError('CLOSED', 'the disk handle has been closed (or attached)', { path: handle.path });
  return state.disk;
}

/**
 * VDDK works on virtual disks only: a file that no format claims (the Disk API would take it as
 * raw) is refused with VIX_E_DISK_INVALIDDISK before anything reads, grows, renames or deletes
 * it, so a path given by mistake is never changed. `hint` says how the caller reaches raw data.
 */
export async function needDiskImage(path: string, hint = 'to use raw data, name it as the extent of a flat VMDK descriptor'): Promise<void> {
  if ((await detectFormat(path)).name === 'raw') {
    throw fail('INVALIDDISK', 'VIX_E_DISK_INVALIDDISK', `not a disk image of any known format: ${hint}`, { path, field: 'format', found: 'raw' });
  }
}

/** a sector number or count: a safe non-negative integer */
export function sectors(value: number, field: string, path?: string): number {
  if (!Number.isSafeInteger(value) || value < 0) throw fail('INVAL', 'VIX_E_DISK_INVAL', `${field} must be a whole number of sectors`, { path, field, found: value });
  if (!Number.isSafeInteger(value * SECTOR_SIZE)) throw fail('INVAL', 'VIX_E_DISK_INVAL', `${field} is too large`, { path, field, found: value });
  return value;
}

/** a long call's progress reports (whole percents, each once) to the caller's function, which may stop it by returning false */
export function startProgress(fn: VixDiskLibProgressFunc | null | undefined, data: unknown): { report: (percent: number) => void; signal: AbortSignal } {
  const abort = new AbortController();
  let last = -1;
  const progress = {
    signal: abort.signal,
    report(percent: number) {
      const p = Math.max(0, Math.min(100, Math.floor(percent)));
      if (!fn || p === last) return;
      last = p;
      if (fn(data, p) === false) abort.abort(new Error('progress function returned false'));
    },
  };
  // every long call reports 0 % as its work starts
  progress.report(0);
  return progress;
}

export function cancelled(signal: AbortSignal, path: string): void {
  if (signal.aborted) throw new DiskError('CANCELLED', undefined, { path }, { cause: signal.reason });
}

const DISK_TYPES: Record<number, { type: string; thin?: boolean } | undefined> = {
  [VIXDISKLIB_DISK_MONOLITHIC_SPARSE]: { type: 'monolithicSparse' },
  [VIXDISKLIB_DISK_MONOLITHIC_FLAT]: { type: 'monolithicFlat' },
  [VIXDISKLIB_DISK_SPLIT_SPARSE]: { type: 'twoGbMaxExtentSparse' },
  [VIXDISKLIB_DISK_SPLIT_FLAT]: { type: 'twoGbMaxExtentFlat' },
  [VIXDISKLIB_DISK_VMFS_FLAT]: { type: 'vmfs' },
  [VIXDISKLIB_DISK_STREAM_OPTIMIZED]: { type: 'streamOptimized' },
  [VIXDISKLIB_DISK_VMFS_THIN]: { type: 'vmfs', thin: true },
};

export function diskTypeOf(diskType: number, path: string): { type: string; thin?: boolean } {
  const t = DISK_TYPES[diskType];
  if (!t) {
    const what = diskType === VIXDISKLIB_DISK_VMFS_SPARSE ? 'VMFS_SPARSE disks cannot be created here' : `unknown disk type ${diskType}`;
    throw fail(diskType === VIXDISKLIB_DISK_VMFS_SPARSE ? 'NOTSUPPORTED' : 'INVAL', diskType === VIXDISKLIB_DISK_VMFS_SPARSE ? 'VIX_E_DISK_NOTSUPPORTED' : 'VIX_E_DISK_INVAL', what, { path, field: 'diskType', found: diskType });
  }
  return t;
}

const ADAPTERS: Record<number, string | undefined> = {
  [VIXDISKLIB_ADAPTER_IDE]: 'ide',
  [VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC]: 'buslogic',
  [VIXDISKLIB_ADAPTER_SCSI_LSILOGIC]: 'lsilogic',
};

export function adapterName(adapterType: number, path: string): string {
  const a = ADAPTERS[adapterType];
  if (!a) throw fail('INVAL', 'VIX_E_DISK_INVAL', `unknown adapter type ${adapterType}`, { path, field: 'adapterType', found: adapterType });
  return a;
}

export function adapterNumber(name: string | undefined): number {
  for (const [n, a] of Object.entries(ADAPTERS)) if (a === name) return Number(n);
  return VIXDISKLIB_ADAPTER_UNKNOWN;
}
