/**
 * VixDiskLib for local disks: every call of the VDDK programming guide (1.1) plus the later
 * Flush, QueryAllocatedBlocks and CheckRepair, with VDDK's names, argument orders, units and
 * constants, so a VDDK program ports line by line. Each call returns a promise: what the C call
 * returns through an out-parameter is what the promise resolves to, and a VixError other than
 * VIX_OK is a rejection with a VixDiskLibError.
 *
 * Design notes
 * - Units are VDDK's: sectors of VIXDISKLIB_SECTOR_SIZE (512) bytes for every position, count
 *   and capacity (Read/Write, createParams.capacity, GetInfo().capacity, Grow, the blocks of
 *   QueryAllocatedBlocks); bytes only where VDDK says bytes (SpaceNeededForClone).
 * - Numbers of errors (vixdisklib-errors.ts): every name VMware's public vix.h defines has
 *   vix.h's number (16000 INVAL ... 16069, and the general VIX_E_* codes); the names the guide's
 *   table lists but vix.h does not define (RDONLY, FILENOTFOUND, CANCELLED, ...) have vdkit's own
 *   numbers, marked `origin: 'vdkit'` in VIX_ERRORS and listed in VDKIT_OWN_NUMBERS. Those
 *   that are vdkit DiskError codes keep the code's number, so a DiskError's `number` and the
 *   VixDiskLibError's `vixError` agree whenever the code has a VDDK name.
 *   vdkit codes without one are reported under the nearest VDDK name (CORRUPT ->
 *   VIX_E_DISK_NEEDSREPAIR, BADDESCRIPTOR -> VIX_E_DISK_INVALIDDISK, CLOSED -> VIX_E_DISK_NOIO,
 *   EXTERNALEXTENT -> VIX_E_DISK_PERMISSIONS, INTERNAL -> VIX_E_FAIL); the DiskError code stays
 *   on the error as `code`. GetErrorText returns the guide's Table C-1 text.
 * - Connections are local only: Connect with a serverName (managed disk on ESX/vCenter) is
 *   refused with VIX_E_DISK_NOTSUPPORTED; transport mode is always "file". ConnectEx's
 *   readOnly makes every Open read-only and refuses the calls that write files.
 * - Open refuses a file no format claims (VIX_E_DISK_INVALIDDISK) unless the caller says it
 *   is raw: a flat VMDK descriptor naming it, or vdkit's VDKIT_FLAG_OPEN_RAW.
 * - Init's log, warn and panic callbacks and InitEx's config file: vixdisklib-log.ts.
 * - Open flags: READ_ONLY and SINGLE_LINK map onto the Disk API; UNBUFFERED is accepted and
 *   has no effect (Node offers no O_DIRECT; every write still goes through the kit's ordered
 *   write path). Opening read-write a disk a child depends on is refused, as the guide says.
 * - Where VDDK and vdkit's own commands disagree, this module follows VDDK: Unlink deletes a
 *   disk even when children depend on it (the header: "the child will be orphaned"), and
 *   CheckRepair resolves VIX_OK whatever it finds ("refers to the success of the call, not the
 *   consistency of the disk"), handing back the findings.
 * - Shrink and Defragment go through the Image contract's compact/defragment (capabilities
 *   compact/defragment). On flat (preallocated) disks they do nothing and return VIX_OK, as
 *   the guide says; a sparse type whose driver has neither gives VIX_E_DISK_NOTSUPPORTED.
 * - Progress functions get (progressData, percentCompleted) as in VDDK; VDDK ignores their
 *   return value, here returning exactly `false` cancels the operation (VIX_E_DISK_CANCELLED).
 * - Clone's createParams.capacity: 0 clones at the source's size; a larger one grows the
 *   clone; a smaller one is refused (it would lose data), VIX_E_DISK_INVAL.
 * - Attach (the guide's recipe: Create a fresh disk, open it, Attach it to a parent) points
 *   the child's root link at the parent's file, then reopens the child as the combined chain;
 *   the parent handle is closed, as VDDK invalidates it.
 */
import { DiskError, ERROR_TABLE } from '../core/errors.js';
import { SECTOR_SIZE } from '../core/ints.js';
import { Disk, detectFormat, openLinkIn } from '../disk.js';
import { hintFor, parentFacts } from '../chain/chain.js';
import type { CheckReport, Image, InPlaceOptions, InPlaceResult } from '../formats/types.js';
import { convert } from '../ops/convert.js';
import { createChild } from '../ops/child.js';
import { measure } from '../ops/measure.js';
import { resize } from '../ops/resize.js';
import { rename, unlink } from '../ops/rename.js';
import { checkDisk } from '../ops/check.js';
import { VIX_ERRORS, VIX_OK, VixDiskLibError, toVixError, vixFail as fail } from './vixdisklib-errors.js';
import { DEFAULT_CONFIG, VIX_LOG_ERROR, VIX_LOG_INFO, VIX_LOG_PANIC, VIX_LOG_WARNING, VixLogger, readConfigFile, type VixDiskLibConfig, type VixDiskLibGenericLogFunc } from './vixdisklib-log.js';

// ---------------------------------------------------------------------------------------------
// Constants (vixDiskLib.h)

export const VIXDISKLIB_SECTOR_SIZE = 512;
export const VIXDISKLIB_VERSION_MAJOR = 1;
export const VIXDISKLIB_VERSION_MINOR = 1;

export const VIXDISKLIB_DISK_MONOLITHIC_SPARSE = 1;
export const VIXDISKLIB_DISK_MONOLITHIC_FLAT = 2;
export const VIXDISKLIB_DISK_SPLIT_SPARSE = 3;
export const VIXDISKLIB_DISK_SPLIT_FLAT = 4;
export const VIXDISKLIB_DISK_VMFS_FLAT = 5;
export const VIXDISKLIB_DISK_STREAM_OPTIMIZED = 6;
export const VIXDISKLIB_DISK_VMFS_THIN = 7;
/** the guide's spelling of VIXDISKLIB_DISK_VMFS_THIN */
export const VIXDISKLIB_VMFS_THIN = VIXDISKLIB_DISK_VMFS_THIN;
export const VIXDISKLIB_DISK_VMFS_SPARSE = 8;
export const VIXDISKLIB_DISK_UNKNOWN = 256;

export const VIXDISKLIB_ADAPTER_IDE = 1;
export const VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC = 2;
export const VIXDISKLIB_ADAPTER_SCSI_LSILOGIC = 3;
export const VIXDISKLIB_ADAPTER_UNKNOWN = 256;

export const VIXDISKLIB_HWVERSION_WORKSTATION_4 = 3;
export const VIXDISKLIB_HWVERSION_WORKSTATION_5 = 4;
export const VIXDISKLIB_HWVERSION_WORKSTATION_6 = 6;
export const VIXDISKLIB_HWVERSION_ESX30 = VIXDISKLIB_HWVERSION_WORKSTATION_5;
export const VIXDISKLIB_HWVERSION_ESX4X = 7;
export const VIXDISKLIB_HWVERSION_CURRENT = VIXDISKLIB_HWVERSION_ESX4X;

export const VIXDISKLIB_FLAG_OPEN_UNBUFFERED = 1 << 0;
export const VIXDISKLIB_FLAG_OPEN_SINGLE_LINK = 1 << 1;
export const VIXDISKLIB_FLAG_OPEN_READ_ONLY = 1 << 2;
/**
 * vdkit's own open flag (not VDDK's): the file is raw sector data, open it as such. Without it
 * Open refuses a file that is not a disk image of a known format (VIX_E_DISK_INVALIDDISK), as
 * VDDK does; VDDK's way to reach raw data, a flat VMDK descriptor naming the file as its
 * extent, works too.
 */
export const VDKIT_FLAG_OPEN_RAW = 1 << 16;

export const VIXDISKLIB_CRED_UID = 1;
export const VIXDISKLIB_CRED_SESSIONID = 2;

/** QueryAllocatedBlocks: smallest chunk, and most chunks per call (VDDK 6.7) */
export const VIXDISKLIB_MIN_CHUNK_SIZE = 128;
export const VIXDISKLIB_MAX_CHUNK_NUMBER = 512 * 1024;

// ---------------------------------------------------------------------------------------------
// Errors (numbers, texts, VixDiskLibError: ./vixdisklib-errors.ts)

export * from './vixdisklib-errors.js';

/** run a call body, turning whatever it throws into a VixDiskLibError (reported to the warn callback) */
async function call<T>(body: () => Promise<T>): Promise<T> {
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

// ---------------------------------------------------------------------------------------------
// Types

export interface VixDiskLibGeometry {
  cylinders: number;
  heads: number;
  sectors: number;
}

export interface VixDiskLibCreateParams {
  diskType: number;
  adapterType: number;
  hwVersion: number;
  /** in sectors */
  capacity: number;
}

export interface VixDiskLibInfo {
  biosGeo: VixDiskLibGeometry;
  physGeo: VixDiskLibGeometry;
  /** in sectors */
  capacity: number;
  adapterType: number;
  /** base disk + redo logs */
  numLinks: number;
  parentFileNameHint: string | null;
  uuid: string | null;
}

export interface VixDiskLibConnectParams {
  vmxSpec?: string | null;
  serverName?: string | null;
  thumbPrint?: string | null;
  credType?: number;
  creds?: { uid?: { userName?: string; password?: string } };
  port?: number;
}

/** a block of QueryAllocatedBlocks, in sectors */
export interface VixDiskLibBlock {
  offset: number;
  length: number;
}

/** VDDK: Bool (*)(void *progressData, int percentCompleted); return false to cancel */
export type VixDiskLibProgressFunc = (progressData: unknown, percentCompleted: number) => boolean | void;
export type { VixDiskLibGenericLogFunc, VixDiskLibConfig } from './vixdisklib-log.js';
export { VIX_LOG_PANIC, VIX_LOG_ERROR, VIX_LOG_WARNING, VIX_LOG_AUDIT, VIX_LOG_INFO, VIX_LOG_VERBOSE, VIX_LOG_TRIVIA } from './vixdisklib-log.js';

export interface VixDiskLibConnection {
  readonly local: true;
  readonly vmxSpec: string | null;
}

export interface VixDiskLibHandle {
  readonly path: string;
  readonly flags: number;
}

interface ConnectionState {
  open: boolean;
  params: VixDiskLibConnectParams;
  /** ConnectEx(readOnly = true): every Open is read-only, and calls that write refuse */
  readOnly: boolean;
}

interface HandleState {
  disk: Disk | undefined;
  connection: VixDiskLibConnection;
}

// ---------------------------------------------------------------------------------------------
// Library state

let initialised = false;
let logger = new VixLogger({});
let libConfig: Readonly<VixDiskLibConfig> = DEFAULT_CONFIG;
const connections = new WeakMap<VixDiskLibConnection, ConnectionState>();
const handles = new WeakMap<VixDiskLibHandle, HandleState>();

function log(message: string, level = VIX_LOG_INFO): void {
  logger.emit(level, message);
}

function needInit(): void {
  if (!initialised) throw fail('NOINIT', 'VIX_E_DISK_NOINIT', 'call VixDiskLib_Init first');
}

function liveConnection(connection: VixDiskLibConnection): ConnectionState {
  needInit();
  const state = connection ? connections.get(connection) : undefined;
  if (!state || !state.open) throw fail('INVAL', 'VIX_E_DISK_INVALID_CONNECTION', 'not a connected VixDiskLib connection (Connect it, and do not use it after Disconnect)');
  return state;
}

/** a live connection that may write (not made by ConnectEx with readOnly) */
function writableConnection(connection: VixDiskLibConnection, what: string, path: string): ConnectionState {
  const state = liveConnection(connection);
  if (state.readOnly) throw new DiskError('RDONLY', `${what} writes, and this connection was made read-only (VixDiskLib_ConnectEx with readOnly)`, { path, field: 'readOnly' });
  return state;
}

function liveDisk(handle: VixDiskLibHandle): Disk {
  const state = handle ? handles.get(handle) : undefined;
  if (!state) throw fail('INVAL', 'VIX_E_DISK_INVAL', 'not a disk handle from VixDiskLib_Open');
  if (!state.disk) throw new DiskError('CLOSED', 'the disk handle has been closed (or attached)', { path: handle.path });
  return state.disk;
}

/** a sector number or count: a safe non-negative integer */
function sectors(value: number, field: string, path?: string): number {
  if (!Number.isSafeInteger(value) || value < 0) throw fail('INVAL', 'VIX_E_DISK_INVAL', `${field} must be a whole number of sectors`, { path, field, found: value });
  if (!Number.isSafeInteger(value * SECTOR_SIZE)) throw fail('INVAL', 'VIX_E_DISK_INVAL', `${field} is too large`, { path, field, found: value });
  return value;
}

function progressOf(fn: VixDiskLibProgressFunc | null | undefined, data: unknown): { report: (percent: number) => void; signal: AbortSignal } {
  const abort = new AbortController();
  let last = -1;
  return {
    signal: abort.signal,
    report(percent: number) {
      const p = Math.max(0, Math.min(100, Math.floor(percent)));
      if (!fn || p === last) return;
      last = p;
      if (fn(data, p) === false) abort.abort(new Error('progress function returned false'));
    },
  };
}

function cancelled(signal: AbortSignal, path: string): void {
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

function diskTypeOf(diskType: number, path: string): { type: string; thin?: boolean } {
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

function adapterName(adapterType: number, path: string): string {
  const a = ADAPTERS[adapterType];
  if (!a) throw fail('INVAL', 'VIX_E_DISK_INVAL', `unknown adapter type ${adapterType}`, { path, field: 'adapterType', found: adapterType });
  return a;
}

function adapterNumber(name: string | undefined): number {
  for (const [n, a] of Object.entries(ADAPTERS)) if (a === name) return Number(n);
  return VIXDISKLIB_ADAPTER_UNKNOWN;
}

// ---------------------------------------------------------------------------------------------
// Start up and shut down

/**
 * VixDiskLib_Init(majorVersion, minorVersion, log, warn, panic, libDir): `log` gets information,
 * `warn` warnings and every failed call, `panic` vdkit's internal errors (vixdisklib-log.ts);
 * a null one falls back to `log`. libDir has no use here (nothing is loaded).
 */
export async function VixDiskLib_Init(
  majorVersion: number,
  minorVersion: number,
  log?: VixDiskLibGenericLogFunc | null,
  warn?: VixDiskLibGenericLogFunc | null,
  panic?: VixDiskLibGenericLogFunc | null,
  libDir?: string | null,
): Promise<number> {
  return initWith(majorVersion, minorVersion, { log, warn, panic }, libDir, null);
}

/**
 * VixDiskLib_InitEx(..., libDir, configFile): Init with a config file; its keys
 * (tmpDirectory, vixDiskLib.transport.LogLevel, vixDiskLib.nfc.*) are described in
 * vixdisklib-log.ts. A file that cannot be read or parsed fails the call (nothing initialised).
 */
export async function VixDiskLib_InitEx(
  majorVersion: number,
  minorVersion: number,
  log?: VixDiskLibGenericLogFunc | null,
  warn?: VixDiskLibGenericLogFunc | null,
  panic?: VixDiskLibGenericLogFunc | null,
  libDir?: string | null,
  configFile?: string | null,
): Promise<number> {
  return initWith(majorVersion, minorVersion, { log, warn, panic }, libDir, configFile ?? null);
}

async function initWith(
  majorVersion: number,
  minorVersion: number,
  funcs: { log?: VixDiskLibGenericLogFunc | null; warn?: VixDiskLibGenericLogFunc | null; panic?: VixDiskLibGenericLogFunc | null },
  _libDir: string | null | undefined,
  configFile: string | null,
): Promise<number> {
  // failures of Init itself go to the callbacks just given
  logger = new VixLogger(funcs);
  return call(async () => {
    if (majorVersion !== VIXDISKLIB_VERSION_MAJOR || !Number.isInteger(minorVersion) || minorVersion < 0) {
      throw fail('INVAL', 'VIX_E_DISK_INVAL', `API version ${majorVersion}.${minorVersion} is not offered (this is ${VIXDISKLIB_VERSION_MAJOR}.x)`, { field: 'majorVersion', found: majorVersion });
    }
    const notes: [number, string][] = [];
    libConfig = configFile ? await readConfigFile(configFile, notes) : DEFAULT_CONFIG;
    logger = new VixLogger(funcs, libConfig);
    initialised = true;
    for (const [level, text] of notes) log(text, level);
    log(`VixDiskLib: initialised (API ${majorVersion}.${minorVersion}${configFile ? `, config ${configFile}` : ''})`);
    return VIX_OK;
  });
}

/** VixDiskLib_Exit: de-initialise; calls after it fail with VIX_E_DISK_NOINIT until Init again */
export function VixDiskLib_Exit(): void {
  if (initialised) log('VixDiskLib: exit');
  initialised = false;
  logger = new VixLogger({});
  libConfig = DEFAULT_CONFIG;
}

/** what Init/InitEx configured (DEFAULT_CONFIG without a config file) */
export function vixDiskLibConfig(): Readonly<VixDiskLibConfig> {
  return libConfig;
}

/** the transports this library offers: local files only */
export function VixDiskLib_ListTransportModes(): string {
  return 'file';
}

/** VixDiskLib_Connect(connectParams): a connection for local disks (params null or without serverName) */
export async function VixDiskLib_Connect(connectParams: VixDiskLibConnectParams | null): Promise<VixDiskLibConnection> {
  return connect(connectParams, false);
}

function connect(connectParams: VixDiskLibConnectParams | null, readOnly: boolean): Promise<VixDiskLibConnection> {
  return call(async () => {
    needInit();
    const params = connectParams ?? {};
    if (params.serverName) {
      throw fail('NOTSUPPORTED', 'VIX_E_DISK_NOTSUPPORTED', `managed disks on ${params.serverName} need VMware's VDDK: this library opens local (hosted) disks only`, { field: 'serverName', found: params.serverName });
    }
    const connection: VixDiskLibConnection = Object.freeze({ local: true as const, vmxSpec: params.vmxSpec ?? null });
    connections.set(connection, { open: true, params: { ...params }, readOnly });
    log(`VixDiskLib: connected to local disks${readOnly ? ', read-only' : ''}`);
    return connection;
  });
}

/**
 * VixDiskLib_ConnectEx(connectParams, readOnly, snapshotRef, transportModes): as Connect. With
 * readOnly, "later calls to VixDiskLib_Open() are always read-only regardless of the openFlags
 * setting" (the guide), and the calls that write files through the connection (Create, Clone
 * into it, Grow, Unlink, CheckRepair with repair) refuse with VIX_E_DISK_RDONLY. snapshotRef
 * only matters remotely.
 */
export async function VixDiskLib_ConnectEx(
  connectParams: VixDiskLibConnectParams | null,
  readOnly: boolean,
  _snapshotRef: string | null,
  transportModes: string | null,
): Promise<VixDiskLibConnection> {
  if (transportModes && !transportModes.split(':').includes('file')) {
    return call(async () => {
      throw fail('NOTSUPPORTED', 'VIX_E_DISK_NOTSUPPORTED', `transport modes ${transportModes}: only "file" is offered`, { field: 'transportModes', found: transportModes });
    });
  }
  return connect(connectParams, !!readOnly);
}

export async function VixDiskLib_Disconnect(connection: VixDiskLibConnection): Promise<number> {
  return call(async () => {
    liveConnection(connection).open = false;
    return VIX_OK;
  });
}

/** VixDiskLib_GetConnectParams: what the connection was made with */
export async function VixDiskLib_GetConnectParams(connection: VixDiskLibConnection): Promise<VixDiskLibConnectParams> {
  return call(async () => ({ ...liveConnection(connection).params }));
}

/** after an unclean shutdown: nothing to clean for local disks */
export async function VixDiskLib_Cleanup(_connectParams: VixDiskLibConnectParams | null): Promise<{ numCleanedUp: number; numRemaining: number }> {
  return call(async () => {
    needInit();
    return { numCleanedUp: 0, numRemaining: 0 };
  });
}

// ---------------------------------------------------------------------------------------------
// Disk operations

/** VixDiskLib_Create(connection, path, createParams, progressFunc, progressCallbackData) */
export async function VixDiskLib_Create(
  connection: VixDiskLibConnection,
  path: string,
  createParams: VixDiskLibCreateParams,
  progressFunc?: VixDiskLibProgressFunc | null,
  progressCallbackData?: unknown,
): Promise<number> {
  return call(async () => {
    writableConnection(connection, 'Create', path);
    const { type, thin } = diskTypeOf(createParams.diskType, path);
    if (type === 'streamOptimized') {
      throw fail('NOTSUPPORTED', 'VIX_E_DISK_NOTSUPPORTED', 'streamOptimized disks are made by Clone, not Create (they cannot be written in place)', { path, field: 'diskType' });
    }
    const capacity = sectors(createParams.capacity, 'capacity', path);
    if (capacity === 0) throw fail('INVAL', 'VIX_E_DISK_INVAL', 'capacity must be at least one sector', { path, field: 'capacity', found: 0 });
    const progress = progressOf(progressFunc, progressCallbackData);
    progress.report(0);
    const d = await Disk.create(path, {
      format: 'vmdk',
      type,
      thin,
      capacity: capacity * SECTOR_SIZE,
      adapterType: adapterName(createParams.adapterType, path),
      hwVersion: createParams.hwVersion || VIXDISKLIB_HWVERSION_WORKSTATION_5,
    });
    await d.close();
    progress.report(100);
    return VIX_OK;
  });
}

/** VixDiskLib_CreateChild(diskHandle, childPath, diskType, progressFunc, progressCallbackData) */
export async function VixDiskLib_CreateChild(
  diskHandle: VixDiskLibHandle,
  childPath: string,
  diskType: number,
  progressFunc?: VixDiskLibProgressFunc | null,
  progressCallbackData?: unknown,
): Promise<number> {
  return call(async () => {
    const parent = liveDisk(diskHandle);
    writableConnection(handles.get(diskHandle)!.connection, 'CreateChild', childPath);
    if (diskType !== VIXDISKLIB_DISK_MONOLITHIC_SPARSE && diskType !== VIXDISKLIB_DISK_SPLIT_SPARSE) {
      throw fail('INVAL', 'VIX_E_DISK_INVAL', 'a child is VIXDISKLIB_DISK_MONOLITHIC_SPARSE or VIXDISKLIB_DISK_SPLIT_SPARSE', { path: childPath, field: 'diskType', found: diskType });
    }
    const progress = progressOf(progressFunc, progressCallbackData);
    progress.report(0);
    const child = await createChild(parent.path, childPath, { type: diskTypeOf(diskType, childPath).type });
    await child.close();
    progress.report(100);
    return VIX_OK;
  });
}

/** VixDiskLib_Open(connection, path, flags): a handle for Read, Write, GetInfo, ... */
export async function VixDiskLib_Open(connection: VixDiskLibConnection, path: string, flags: number): Promise<VixDiskLibHandle> {
  return call(async () => {
    const cnx = liveConnection(connection);
    const known = VIXDISKLIB_FLAG_OPEN_UNBUFFERED | VIXDISKLIB_FLAG_OPEN_SINGLE_LINK | VIXDISKLIB_FLAG_OPEN_READ_ONLY | VDKIT_FLAG_OPEN_RAW;
    if (!Number.isInteger(flags) || (flags & ~known) !== 0) throw fail('INVAL', 'VIX_E_DISK_INVAL', `unknown open flags 0x${(flags >>> 0).toString(16)}`, { path, field: 'flags', found: flags });
    const raw = (flags & VDKIT_FLAG_OPEN_RAW) !== 0;
    // content that no format claims falls back to raw in the Disk API; VDDK refuses it, and a
    // Write would overwrite whatever the file holds
    if (!raw && (await detectFormat(path)).name === 'raw') {
      throw fail('INVALIDDISK', 'VIX_E_DISK_INVALIDDISK', 'not a disk image of any known format: to open raw data, name it in a flat VMDK descriptor or pass VDKIT_FLAG_OPEN_RAW', { path, field: 'format', found: 'raw' });
    }
    const readOnly = (flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY) !== 0 || cnx.readOnly;
    if (cnx.readOnly && (flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY) === 0) log(`VixDiskLib: ${path} opened read-only: the connection is read-only`);
    if (flags & VIXDISKLIB_FLAG_OPEN_UNBUFFERED) log(`VixDiskLib: ${path}: VIXDISKLIB_FLAG_OPEN_UNBUFFERED has no effect here (no O_DIRECT in Node)`);
    const disk = await Disk.open(path, {
      readOnly,
      singleLink: (flags & VIXDISKLIB_FLAG_OPEN_SINGLE_LINK) !== 0,
      format: raw ? 'raw' : undefined,
    });
    const handle: VixDiskLibHandle = Object.freeze({ path, flags });
    handles.set(handle, { disk, connection });
    if (logger.wants(VIX_LOG_WARNING)) {
      // damage tolerated by the open (a qcow2 dirty bit, a VHD checksum ignored, ...)
      const info = await disk.info().catch(() => undefined);
      for (const w of info?.warnings ?? []) log(`VixDiskLib: ${path}: ${w}`, VIX_LOG_WARNING);
    }
    return handle;
  });
}

export async function VixDiskLib_Close(diskHandle: VixDiskLibHandle): Promise<number> {
  return call(async () => {
    const disk = liveDisk(diskHandle);
    handles.get(diskHandle)!.disk = undefined;
    await disk.close();
    return VIX_OK;
  });
}

/** VixDiskLib_GetInfo(diskHandle): geometry, capacity in sectors, adapter, links, parent hint, uuid */
export async function VixDiskLib_GetInfo(diskHandle: VixDiskLibHandle): Promise<VixDiskLibInfo> {
  return call(async () => {
    const info = await liveDisk(diskHandle).info();
    const geo = (g: VixDiskLibGeometry | undefined): VixDiskLibGeometry => ({ cylinders: g?.cylinders ?? 0, heads: g?.heads ?? 0, sectors: g?.sectors ?? 0 });
    return {
      biosGeo: geo(info.biosGeometry),
      physGeo: geo(info.geometry),
      capacity: Math.floor(info.capacity / SECTOR_SIZE),
      adapterType: adapterNumber(info.adapterType),
      numLinks: info.numLinks,
      parentFileNameHint: info.parent ?? null,
      uuid: info.uuid ?? null,
    };
  });
}

/** nothing to free in JavaScript; kept so ported code reads the same */
export function VixDiskLib_FreeInfo(_info: VixDiskLibInfo | null): void {}

/** "file": every disk here is a local file */
export function VixDiskLib_GetTransportMode(diskHandle: VixDiskLibHandle): string {
  liveDisk(diskHandle);
  return 'file';
}

function checkBuffer(buf: Uint8Array, numSectors: number, path: string): void {
  if (!(buf instanceof Uint8Array)) throw fail('INVAL', 'VIX_E_DISK_INVAL', 'the buffer must be a Buffer or Uint8Array', { path, field: 'buffer' });
  if (buf.length < numSectors * SECTOR_SIZE) {
    throw fail('INVAL', 'VIX_E_BUFFER_TOOSMALL', `the buffer holds ${buf.length} bytes; ${numSectors} sectors need ${numSectors * SECTOR_SIZE}`, { path, field: 'buffer', expected: numSectors * SECTOR_SIZE, found: buf.length });
  }
}

/** VixDiskLib_Read(diskHandle, startSector, numSectors, readBuffer): fills readBuffer */
export async function VixDiskLib_Read(diskHandle: VixDiskLibHandle, startSector: number, numSectors: number, readBuffer: Uint8Array): Promise<number> {
  return call(async () => {
    const disk = liveDisk(diskHandle);
    sectors(startSector, 'startSector', disk.path);
    sectors(numSectors, 'numSectors', disk.path);
    checkBuffer(readBuffer, numSectors, disk.path);
    const view = Buffer.from(readBuffer.buffer, readBuffer.byteOffset, numSectors * SECTOR_SIZE);
    await disk.readInto(view, startSector * SECTOR_SIZE);
    return VIX_OK;
  });
}

/** VixDiskLib_Write(diskHandle, startSector, numSectors, writeBuffer) */
export async function VixDiskLib_Write(diskHandle: VixDiskLibHandle, startSector: number, numSectors: number, writeBuffer: Uint8Array): Promise<number> {
  return call(async () => {
    const disk = liveDisk(diskHandle);
    sectors(startSector, 'startSector', disk.path);
    sectors(numSectors, 'numSectors', disk.path);
    checkBuffer(writeBuffer, numSectors, disk.path);
    await disk.write(startSector * SECTOR_SIZE, Buffer.from(writeBuffer.buffer, writeBuffer.byteOffset, numSectors * SECTOR_SIZE));
    return VIX_OK;
  });
}

/** VixDiskLib_Flush: written data (and the format's metadata) made durable */
export async function VixDiskLib_Flush(diskHandle: VixDiskLibHandle): Promise<number> {
  return call(async () => {
    await liveDisk(diskHandle).flush();
    return VIX_OK;
  });
}

// ---------------------------------------------------------------------------------------------
// Metadata

/** VixDiskLib_ReadMetadata(diskHandle, key): the value; VIX_E_DISK_KEY_NOTFOUND when absent */
export async function VixDiskLib_ReadMetadata(diskHandle: VixDiskLibHandle, key: string): Promise<string> {
  return call(async () => {
    const disk = liveDisk(diskHandle);
    const v = disk.readMetadata(key);
    if (v === undefined) throw fail('INVAL', 'VIX_E_DISK_KEY_NOTFOUND', `no metadata key ${JSON.stringify(key)}`, { path: disk.path, field: key });
    return v;
  });
}

/** VixDiskLib_WriteMetadata(diskHandle, key, val): add or update one entry */
export async function VixDiskLib_WriteMetadata(diskHandle: VixDiskLibHandle, key: string, val: string): Promise<number> {
  return call(async () => {
    await liveDisk(diskHandle).writeMetadata(key, val);
    return VIX_OK;
  });
}

/** VixDiskLib_GetMetadataKeys(diskHandle): every key, in the disk's order */
export async function VixDiskLib_GetMetadataKeys(diskHandle: VixDiskLibHandle): Promise<string[]> {
  return call(async () => liveDisk(diskHandle).metadataKeys());
}

// ---------------------------------------------------------------------------------------------
// Allocation

/**
 * VixDiskLib_QueryAllocatedBlocks(diskHandle, startSector, numSectors, chunkSize): the chunks of
 * [startSector, startSector+numSectors) that hold data anywhere in the opened chain, merged into
 * blocks (sectors). chunkSize is at least VIXDISKLIB_MIN_CHUNK_SIZE and a power of two,
 * startSector and numSectors whole chunks (a range may end at the disk's end instead), and at
 * most VIXDISKLIB_MAX_CHUNK_NUMBER chunks per call.
 */
export async function VixDiskLib_QueryAllocatedBlocks(diskHandle: VixDiskLibHandle, startSector: number, numSectors: number, chunkSize: number): Promise<VixDiskLibBlock[]> {
  return call(async () => {
    const disk = liveDisk(diskHandle);
    const path = disk.path;
    sectors(startSector, 'startSector', path);
    sectors(numSectors, 'numSectors', path);
    sectors(chunkSize, 'chunkSize', path);
    if (chunkSize < VIXDISKLIB_MIN_CHUNK_SIZE || (chunkSize & (chunkSize - 1)) !== 0) {
      throw fail('INVAL', 'VIX_E_DISK_INVAL', `chunkSize must be a power of two of at least ${VIXDISKLIB_MIN_CHUNK_SIZE} sectors`, { path, field: 'chunkSize', found: chunkSize });
    }
    const total = disk.sectorCount;
    const end = startSector + numSectors;
    if (end > total) throw fail('OUTOFRANGE', 'VIX_E_DISK_OUTOFRANGE', ERROR_TABLE.OUTOFRANGE.text, { path, field: 'numSectors', expected: `end <= ${total}`, found: end });
    if (startSector % chunkSize !== 0 || (numSectors % chunkSize !== 0 && end !== total)) {
      throw fail('INVAL', 'VIX_E_DISK_INVAL', 'startSector and numSectors must be whole chunks', { path, field: 'numSectors', found: numSectors });
    }
    if (Math.ceil(numSectors / chunkSize) > VIXDISKLIB_MAX_CHUNK_NUMBER) {
      throw fail('INVAL', 'VIX_E_DISK_INVAL', `at most ${VIXDISKLIB_MAX_CHUNK_NUMBER} chunks per call`, { path, field: 'numSectors', found: numSectors });
    }
    const blocks: VixDiskLibBlock[] = [];
    if (numSectors === 0) return blocks;
    for (const r of await disk.blockStatus(startSector * SECTOR_SIZE, numSectors * SECTOR_SIZE)) {
      if (r.state !== 'data' || r.length === 0) continue;
      const first = Math.floor(r.offset / SECTOR_SIZE / chunkSize) * chunkSize;
      const last = Math.min(end, Math.ceil((r.offset + r.length) / SECTOR_SIZE / chunkSize) * chunkSize);
      const prev = blocks[blocks.length - 1];
      if (prev && first <= prev.offset + prev.length) prev.length = Math.max(prev.length, last - prev.offset);
      else blocks.push({ offset: first, length: last - first });
    }
    return blocks;
  });
}

/** nothing to free in JavaScript */
export function VixDiskLib_FreeBlockList(_blockList: VixDiskLibBlock[] | null): void {}

// ---------------------------------------------------------------------------------------------
// Cloning

/** VixDiskLib_SpaceNeededForClone(diskHandle, cloneDiskType): bytes (UNKNOWN: the source's type) */
export async function VixDiskLib_SpaceNeededForClone(diskHandle: VixDiskLibHandle, cloneDiskType: number): Promise<number> {
  return call(async () => {
    const disk = liveDisk(diskHandle);
    let format = 'vmdk';
    let type: string;
    let thin: boolean | undefined;
    if (cloneDiskType === VIXDISKLIB_DISK_UNKNOWN) {
      format = disk.format;
      type = disk.type;
    } else {
      ({ type, thin } = diskTypeOf(cloneDiskType, disk.path));
    }
    const adapterType = format === 'vmdk' ? disk.readMetadata('adapterType') : undefined;
    const r = await measure(disk, { format, type, thin, adapterType: adapterType && ADAPTERS_BY_NAME.has(adapterType) ? adapterType : undefined });
    return r.required;
  });
}

const ADAPTERS_BY_NAME = new Set(['ide', 'buslogic', 'lsilogic', 'pvscsi', 'legacyESX']);

/**
 * VixDiskLib_Clone(dstConnection, dstPath, srcConnection, srcPath, createParams, progressFunc,
 * progressCallbackData, overWrite): copy the source chain into a new VMDK of createParams'
 * type, adapter and hardware version. Only the ranges holding data are copied.
 */
export async function VixDiskLib_Clone(
  dstConnection: VixDiskLibConnection,
  dstPath: string,
  srcConnection: VixDiskLibConnection,
  srcPath: string,
  createParams: VixDiskLibCreateParams,
  progressFunc?: VixDiskLibProgressFunc | null,
  progressCallbackData?: unknown,
  overWrite = false,
): Promise<number> {
  return call(async () => {
    writableConnection(dstConnection, 'Clone', dstPath);
    liveConnection(srcConnection);
    const { type, thin } = diskTypeOf(createParams.diskType, dstPath);
    const adapterType = adapterName(createParams.adapterType, dstPath);
    const wanted = sectors(createParams.capacity ?? 0, 'capacity', dstPath);
    const src = await Disk.open(srcPath, { readOnly: true });
    try {
      let capacity = src.capacity;
      if (wanted !== 0) {
        if (wanted * SECTOR_SIZE < src.capacity) {
          throw fail('INVAL', 'VIX_E_DISK_INVAL', `a clone of ${src.sectorCount} sectors cannot hold ${wanted}: it would lose data`, { path: dstPath, field: 'capacity', expected: `>= ${src.sectorCount}`, found: wanted });
        }
        capacity = wanted * SECTOR_SIZE;
      }
      const progress = progressOf(progressFunc, progressCallbackData);
      progress.report(0);
      await convert(src, dstPath, {
        format: 'vmdk',
        type,
        thin,
        adapterType,
        hwVersion: createParams.hwVersion || VIXDISKLIB_HWVERSION_WORKSTATION_5,
        capacity,
        overwrite: overWrite,
        signal: progress.signal,
        onProgress: (p) => progress.report(p.total === 0 ? 100 : (100 * p.done) / p.total),
      });
      cancelled(progress.signal, dstPath);
      progress.report(100);
    } finally {
      await src.close();
    }
    return VIX_OK;
  });
}

// ---------------------------------------------------------------------------------------------
// Chains

/** VixDiskLib_IsAttachPossible(parent, child): resolves VIX_OK or rejects with the reason */
export async function VixDiskLib_IsAttachPossible(parent: VixDiskLibHandle, child: VixDiskLibHandle): Promise<number> {
  return call(async () => {
    attachCheck(parent, child);
    return VIX_OK;
  });
}

function attachCheck(parentHandle: VixDiskLibHandle, childHandle: VixDiskLibHandle): { parent: Disk; child: Disk } {
  const parent = liveDisk(parentHandle);
  const child = liveDisk(childHandle);
  if (parent === child || parent.path === child.path) throw fail('INVAL', 'VIX_E_DISK_INVAL', 'a disk cannot be attached to itself', { path: child.path });
  if (child.readOnly) throw new DiskError('RDONLY', 'the child must be open read-write to record its new parent', { path: child.path });
  if (child.capacity !== parent.capacity) {
    throw fail('INVAL', 'VIX_E_DISK_CAPACITY_MISMATCH', 'the child and the parent differ in capacity', { path: child.path, field: 'capacity', expected: parent.sectorCount, found: child.sectorCount });
  }
  if (child.image.backing()) throw fail('INVALIDCHAIN', 'VIX_E_DISK_INVALIDCHAIN', 'the child already has a parent: attach the root of a chain', { path: child.path, field: 'parentFileNameHint' });
  if (child.format !== parent.format) throw fail('INVALIDCHAIN', 'VIX_E_DISK_INVALIDCHAIN', `a ${child.format} child cannot have a ${parent.format} parent`, { path: child.path, field: 'format' });
  if (!parent.image.identity()) throw fail('INVALIDDISK', 'VIX_E_DISK_INVALIDDISK', 'the parent has no identity a child could record', { path: parent.path, field: 'identity' });
  return { parent, child };
}

/**
 * VixDiskLib_Attach(parent, child): make `child` (a disk without a parent, typically new from
 * Create) a redo log of `parent`. The parent handle is closed; the child handle now reads
 * through the combined chain.
 */
export async function VixDiskLib_Attach(parentHandle: VixDiskLibHandle, childHandle: VixDiskLibHandle): Promise<number> {
  return call(async () => {
    const { parent, child } = attachCheck(parentHandle, childHandle);
    const parentId = parent.image.identity()!;
    const parentPath = parent.path;
    const childPath = child.path;
    const ns = child.namespace;
    const change = { hint: hintFor(ns, childPath, parentPath), parentId, parentName: ns.absolute(parentPath), parent: parentFacts(parent.image) };
    const childState = handles.get(childHandle)!;
    const parentState = handles.get(parentHandle)!;
    childState.disk = undefined;
    await child.close();
    const link: Image = await openLinkIn(ns, childPath, { singleLink: true, cowByCaller: true });
    try {
      await link.setBacking(change);
    } finally {
      await link.close();
    }
    parentState.disk = undefined;
    await parent.close();
    childState.disk = await Disk.open(childPath, { namespace: ns, readOnly: false, singleLink: (childHandle.flags & VIXDISKLIB_FLAG_OPEN_SINGLE_LINK) !== 0 });
    return VIX_OK;
  });
}

// ---------------------------------------------------------------------------------------------
// Administrative operations

/** VixDiskLib_Rename(srcFileName, dstFileName): every file of the disk, children re-pointed */
export async function VixDiskLib_Rename(srcFileName: string, dstFileName: string): Promise<number> {
  return call(async () => {
    needInit();
    await rename(srcFileName, dstFileName);
    return VIX_OK;
  });
}

/** VixDiskLib_Unlink(connection, path): delete every file of the disk (its children are orphaned) */
export async function VixDiskLib_Unlink(connection: VixDiskLibConnection, path: string): Promise<number> {
  return call(async () => {
    writableConnection(connection, 'Unlink', path);
    await unlink(path, { force: true });
    return VIX_OK;
  });
}

/**
 * VixDiskLib_Grow(connection, path, capacity, updateGeometry, progressFunc, progressCallbackData):
 * the disk (not open) grows to `capacity` sectors. Without updateGeometry the recorded
 * geometry is kept as it was.
 */
export async function VixDiskLib_Grow(
  connection: VixDiskLibConnection,
  path: string,
  capacity: number,
  updateGeometry: boolean,
  progressFunc?: VixDiskLibProgressFunc | null,
  progressCallbackData?: unknown,
): Promise<number> {
  return call(async () => {
    writableConnection(connection, 'Grow', path);
    sectors(capacity, 'capacity', path);
    const progress = progressOf(progressFunc, progressCallbackData);
    progress.report(0);
    const keys = ['geometry.cylinders', 'geometry.heads', 'geometry.sectors'];
    let kept: [string, string][] = [];
    const before = await Disk.open(path, { readOnly: true, singleLink: true });
    try {
      if (capacity * SECTOR_SIZE < before.capacity) {
        throw fail('INVAL', 'VIX_E_DISK_INVAL', `Grow cannot make a disk of ${before.sectorCount} sectors smaller (${capacity})`, { path, field: 'capacity', expected: `>= ${before.sectorCount}`, found: capacity });
      }
      if (!updateGeometry && before.format === 'vmdk') kept = keys.flatMap((k) => (before.readMetadata(k) === undefined ? [] : [[k, before.readMetadata(k)!] as [string, string]]));
    } finally {
      await before.close();
    }
    await resize(path, capacity * SECTOR_SIZE);
    if (kept.length > 0) {
      const d = await Disk.open(path, { singleLink: true, cowByCaller: true, preserveIdentity: true, force: true });
      try {
        for (const [k, v] of kept) if (d.readMetadata(k) !== v) await d.writeMetadata(k, v);
      } finally {
        await d.close();
      }
    }
    progress.report(100);
    return VIX_OK;
  });
}

/** the in-place operation of an open image, or VIX_E_DISK_NOTSUPPORTED */
async function inPlace(
  diskHandle: VixDiskLibHandle,
  what: 'compact' | 'defragment',
  progressFunc: VixDiskLibProgressFunc | null | undefined,
  progressCallbackData: unknown,
): Promise<InPlaceResult> {
  const disk = liveDisk(diskHandle);
  if (disk.readOnly) throw new DiskError('RDONLY', `${what === 'compact' ? 'Shrink' : 'Defragment'} rewrites the disk: open it without VIXDISKLIB_FLAG_OPEN_READ_ONLY`, { path: disk.path });
  const image = disk.image;
  if (what === 'compact' && image.backing() && (diskHandle.flags & VIXDISKLIB_FLAG_OPEN_SINGLE_LINK) === 0) {
    throw fail('CANTSHRINK', 'VIX_E_DISK_CANTSHRINK', 'this disk is a redo log opened with its parents: open it with VIXDISKLIB_FLAG_OPEN_SINGLE_LINK, or shrink the parent', { path: disk.path });
  }
  const run = what === 'compact' ? image.compact : image.defragment;
  if ((image.capabilities[what] === 'none' || !run) && isFlat(image)) {
    // the guide: effective with sparse disks, "might not do anything with FLAT type. In either case, the function returns VIX_OK"
    const progress = progressOf(progressFunc, progressCallbackData);
    progress.report(0);
    const { fileSize } = await disk.info();
    log(`VixDiskLib: ${disk.path}: ${what === 'compact' ? 'Shrink' : 'Defragment'} has nothing to do on a ${image.type} disk`);
    progress.report(100);
    return { fileBytesBefore: fileSize, fileBytesAfter: fileSize };
  }
  if (image.capabilities[what] === 'none' || !run) {
    throw fail('NOTSUPPORTED', 'VIX_E_DISK_NOTSUPPORTED', `${image.format} ${image.type} disks cannot be ${what === 'compact' ? 'shrunk' : 'defragmented'} yet`, { path: disk.path, field: 'type', found: image.type });
  }
  const progress = progressOf(progressFunc, progressCallbackData);
  progress.report(0);
  const opts: InPlaceOptions = { signal: progress.signal, onProgress: (done, total) => progress.report(total === 0 ? 100 : (100 * done) / total) };
  await disk.flush();
  let result: InPlaceResult;
  try {
    // alone on the handle: Read/Write calls made meanwhile wait for it (they would race the moves)
    result = await disk.runExclusive(() => run.call(image, opts));
  } catch (err) {
    // however the driver reports being stopped, a stop asked for by the progress function is a cancel
    cancelled(progress.signal, disk.path);
    throw err;
  }
  cancelled(progress.signal, disk.path);
  progress.report(100);
  return result;
}

/** preallocated disks: every sector has its place in the file, nothing to reclaim or move */
function isFlat(image: Image): boolean {
  if (image.format === 'raw') return true;
  if (image.format === 'vhd') return image.type === 'fixed';
  return image.format === 'vmdk' && /flat|^vmfs$|preallocated|thick/i.test(image.type);
}

/** VixDiskLib_Shrink(diskHandle, progressFunc, progressCallbackData): give back zeroed space */
export async function VixDiskLib_Shrink(diskHandle: VixDiskLibHandle, progressFunc?: VixDiskLibProgressFunc | null, progressCallbackData?: unknown): Promise<InPlaceResult> {
  return call(() => inPlace(diskHandle, 'compact', progressFunc, progressCallbackData));
}

/** VixDiskLib_Defragment(diskHandle, progressFunc, progressCallbackData) */
export async function VixDiskLib_Defragment(diskHandle: VixDiskLibHandle, progressFunc?: VixDiskLibProgressFunc | null, progressCallbackData?: unknown): Promise<InPlaceResult> {
  return call(() => inPlace(diskHandle, 'defragment', progressFunc, progressCallbackData));
}

/**
 * VixDiskLib_CheckRepair(connection, filename, repair): resolves when the check ran (whatever it
 * found), with its report; with `repair` what can be fixed is fixed.
 */
export async function VixDiskLib_CheckRepair(connection: VixDiskLibConnection, filename: string, repair: boolean): Promise<CheckReport> {
  return call(async () => {
    if (repair) writableConnection(connection, 'CheckRepair with repair', filename);
    else liveConnection(connection);
    return checkDisk(filename, { repair: !!repair });
  });
}

// ---------------------------------------------------------------------------------------------
// Error text

/**
 * VixDiskLib_GetErrorText(err, locale): the guide's text for a VixError number (or a VIX_E_*
 * name, or a VixDiskLibError); the low 16 bits are the code, as VIX_ERROR_CODE takes them.
 */
export function VixDiskLib_GetErrorText(err: number | bigint | string | VixDiskLibError, _locale?: string | null): string {
  if (err instanceof VixDiskLibError) return VIX_ERRORS[err.vixCode]?.text ?? err.message;
  if (typeof err === 'string') return VIX_ERRORS[err]?.text ?? `Unknown error ${err}`;
  const code = Number(BigInt(err) & 0xffffn);
  if (code === 0) return VIX_ERRORS.VIX_E_DISK_SUCCESS!.text;
  for (const row of Object.values(VIX_ERRORS)) if (row.number === code) return row.text;
  return `Unknown error ${code}`;
}

/** nothing to free in JavaScript */
export function VixDiskLib_FreeErrorText(_errMsg: string | null): void {}

/** VIX_ERROR_CODE(err): the code part of a VixError */
export function VIX_ERROR_CODE(err: number | bigint): number {
  return Number(BigInt(err) & 0xffffn);
}

/** the VixError of a rejection (VIX_OK for undefined), for code that tests numbers as VDDK does */
export function vixErrorOf(err: unknown): number {
  if (err === undefined || err === null) return VIX_OK;
  return toVixError(err).vixError;
}

/** The calls under their VDDK names, for `VixDiskLib.Open(...)` style code. */
export const VixDiskLib = Object.freeze({
  Init: VixDiskLib_Init,
  InitEx: VixDiskLib_InitEx,
  Exit: VixDiskLib_Exit,
  ListTransportModes: VixDiskLib_ListTransportModes,
  Connect: VixDiskLib_Connect,
  ConnectEx: VixDiskLib_ConnectEx,
  Disconnect: VixDiskLib_Disconnect,
  GetConnectParams: VixDiskLib_GetConnectParams,
  Cleanup: VixDiskLib_Cleanup,
  Create: VixDiskLib_Create,
  CreateChild: VixDiskLib_CreateChild,
  Open: VixDiskLib_Open,
  Close: VixDiskLib_Close,
  GetInfo: VixDiskLib_GetInfo,
  FreeInfo: VixDiskLib_FreeInfo,
  GetTransportMode: VixDiskLib_GetTransportMode,
  Read: VixDiskLib_Read,
  Write: VixDiskLib_Write,
  Flush: VixDiskLib_Flush,
  ReadMetadata: VixDiskLib_ReadMetadata,
  WriteMetadata: VixDiskLib_WriteMetadata,
  GetMetadataKeys: VixDiskLib_GetMetadataKeys,
  QueryAllocatedBlocks: VixDiskLib_QueryAllocatedBlocks,
  FreeBlockList: VixDiskLib_FreeBlockList,
  SpaceNeededForClone: VixDiskLib_SpaceNeededForClone,
  Clone: VixDiskLib_Clone,
  IsAttachPossible: VixDiskLib_IsAttachPossible,
  Attach: VixDiskLib_Attach,
  Rename: VixDiskLib_Rename,
  Unlink: VixDiskLib_Unlink,
  Grow: VixDiskLib_Grow,
  Shrink: VixDiskLib_Shrink,
  Defragment: VixDiskLib_Defragment,
  CheckRepair: VixDiskLib_CheckRepair,
  GetErrorText: VixDiskLib_GetErrorText,
  FreeErrorText: VixDiskLib_FreeErrorText,
});
