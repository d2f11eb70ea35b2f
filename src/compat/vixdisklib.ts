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
 * - Connections: without a serverName, local files (transport "file"). With one, the disks are
 *   NBD exports of that server, opened over the nbd and nbdssl transports by vdkit's NBD
 *   client (vixdisklib-remote.ts: transport order, TLS trust, the network VIX errors);
 *   managed disks of ESX/vCenter (vmxSpec, snapshots, san/hotadd) need VMware's VDDK, or a
 *   server in front of it (nbdkit-vddk). ConnectEx's readOnly makes every Open read-only and
 *   refuses the calls that write files.
 * - Open refuses a file no format claims (VIX_E_DISK_INVALIDDISK) unless the caller says it
 *   is raw: a flat VMDK descriptor naming it, or vdkit's VDKIT_FLAG_OPEN_RAW (an open flag, so
 *   a VDDK program that never passes it behaves as under VDDK). The calls that take a path
 *   instead of a handle (Grow, Unlink, Rename, CheckRepair, Clone's source) refuse such a file
 *   the same way, with no flag to override: nothing here writes, moves or deletes a file that
 *   is not a disk image.
 * - Init's log, warn and panic callbacks and InitEx's config file: vixdisklib-log.ts. An
 *   exception that is no file error (a TypeError: a vdkit bug) is INTERNAL, VIX_E_FAIL, and
 *   goes to panic too; what a read-write Open repaired (a qcow2 dirty bit, a VHDX log) to warn.
 * - Open flags: READ_ONLY and SINGLE_LINK map onto the Disk API; UNBUFFERED is accepted and
 *   has no effect (Node offers no O_DIRECT; every write still goes through the kit's ordered
 *   write path). Opening read-write a disk a child depends on is refused, as the guide says.
 * - Where VDDK and vdkit's own commands disagree, this module follows VDDK: Unlink deletes a
 *   disk even when children depend on it (the header: "the child will be orphaned"), and
 *   CheckRepair resolves VIX_OK whatever it finds ("refers to the success of the call, not the
 *   consistency of the disk"), handing back the findings.
 * - Shrink and Defragment go through the Image contract's compact/defragment (capabilities
 *   compact/defragment). On flat (preallocated) disks (VMDK flat and VMFS, fixed VHD and VHDX,
 *   static VDI, raw) they do nothing and return VIX_OK, as the guide says; a sparse type whose
 *   driver has neither gives VIX_E_DISK_NOTSUPPORTED.
 * - Progress functions get (progressData, percentCompleted) as in VDDK; VDDK ignores their
 *   return value, here returning exactly `false` cancels the operation (VIX_E_DISK_CANCELLED).
 * - Clone's createParams.capacity: 0 clones at the source's size; a larger one grows the
 *   clone; a smaller one is refused (it would lose data), VIX_E_DISK_INVAL.
 * - Attach (the guide's recipe: Create a fresh disk, open it, Attach it to a parent) points
 *   the child's root link at the parent's file, then reopens the child as the combined chain;
 *   the parent handle is closed, as VDDK invalidates it.
 * - Layout: this file has the library's life cycle, connections and the calls on an open handle
 *   (Open, Close, GetInfo, Read, Write, Flush, metadata, QueryAllocatedBlocks, error text);
 *   disk administration (Create, Clone, Attach, Grow, Shrink, ...) is vixdisklib-admin.ts,
 *   the constants and structures vixdisklib-types.ts, the state and checks they share
 *   vixdisklib-state.ts. This module re-exports the first two: import it, not them.
 */
import { ERROR_TABLE } from '../core/errors.js';
import { SECTOR_SIZE } from '../core/ints.js';
import { Disk } from '../disk.js';
import { VIX_ERRORS, VIX_OK, VixDiskLibError, toVixError, vixFail as fail } from './vixdisklib-errors.js';
import { DEFAULT_CONFIG, VIX_LOG_WARNING, VixLogger, readConfigFile, type VixDiskLibConfig, type VixDiskLibGenericLogFunc } from './vixdisklib-log.js';
import { adapterNumber, call, connections, handles, ioCall, lib, liveConnection, liveDisk, log, needInit, openByTransport, sectors } from './vixdisklib-state.js';
import { TRANSPORT_MODES, remoteServerOf, transportList } from './vixdisklib-remote.js';
import {
  VIXDISKLIB_FLAG_OPEN_READ_ONLY,
  VIXDISKLIB_FLAG_OPEN_SINGLE_LINK,
  VIXDISKLIB_FLAG_OPEN_UNBUFFERED,
  VIXDISKLIB_MAX_CHUNK_NUMBER,
  VIXDISKLIB_MIN_CHUNK_SIZE,
  VIXDISKLIB_VERSION_MAJOR,
  VDKIT_FLAG_OPEN_RAW,
  type VixDiskLibBlock,
  type VixDiskLibConnectParams,
  type VixDiskLibConnection,
  type VixDiskLibGeometry,
  type VixDiskLibHandle,
  type VixDiskLibInfo,
} from './vixdisklib-types.js';
import {
  VixDiskLib_Attach,
  VixDiskLib_CheckRepair,
  VixDiskLib_Clone,
  VixDiskLib_Create,
  VixDiskLib_CreateChild,
  VixDiskLib_Defragment,
  VixDiskLib_Grow,
  VixDiskLib_IsAttachPossible,
  VixDiskLib_Rename,
  VixDiskLib_Shrink,
  VixDiskLib_SpaceNeededForClone,
  VixDiskLib_Unlink,
} from './vixdisklib-admin.js';

// ---------------------------------------------------------------------------------------------
// Constants and structures (vixDiskLib.h: ./vixdisklib-types.ts)

export * from './vixdisklib-types.js';

export type { VixDiskLibGenericLogFunc, VixDiskLibConfig } from './vixdisklib-log.js';
export { VIX_LOG_PANIC, VIX_LOG_ERROR, VIX_LOG_WARNING, VIX_LOG_AUDIT, VIX_LOG_INFO, VIX_LOG_VERBOSE, VIX_LOG_TRIVIA } from './vixdisklib-log.js';

// ---------------------------------------------------------------------------------------------
// Errors (numbers, texts, VixDiskLibError: ./vixdisklib-errors.ts)

export * from './vixdisklib-errors.js';

// ---------------------------------------------------------------------------------------------
// Disk administration (./vixdisklib-admin.ts)

export * from './vixdisklib-admin.js';

// ---------------------------------------------------------------------------------------------
// Start up and shut down

/**
 * VixDiskLib_Init's parameters: `log` gets information, `warn` warnings and every failed call,
 * `panic` vdkit's internal errors (vixdisklib-log.ts); a null one falls back to `log`. libDir
 * has no use here (nothing is loaded). InitEx takes a config file after them.
 */
export type InitParams = [
  majorVersion: number,
  minorVersion: number,
  log?: VixDiskLibGenericLogFunc | null,
  warn?: VixDiskLibGenericLogFunc | null,
  panic?: VixDiskLibGenericLogFunc | null,
  libDir?: string | null,
];

/** VixDiskLib_Init(majorVersion, minorVersion, log, warn, panic, libDir): InitEx without a config file */
export function VixDiskLib_Init(...params: InitParams): Promise<number> {
  return initWith(params, null);
}

/**
 * VixDiskLib_InitEx(..., libDir, configFile): Init with a config file; its keys
 * (tmpDirectory, vixDiskLib.transport.LogLevel, vixDiskLib.nfc.*) are described in
 * vixdisklib-log.ts. A file that cannot be read or parsed fails the call (nothing initialised).
 */
export function VixDiskLib_InitEx(...params: [...InitParams, configFile?: string | null]): Promise<number> {
  return initWith(params.slice(0, 6) as InitParams, params[6] ?? null);
}

async function initWith([majorVersion, minorVersion, logFunc, warn, panic]: InitParams, configFile: string | null): Promise<number> {
  const funcs = { log: logFunc, warn, panic };
  // failures of Init itself go to the callbacks just given
  lib.logger = new VixLogger(funcs);
  return call(async () => {
    if (majorVersion !== VIXDISKLIB_VERSION_MAJOR || !Number.isInteger(minorVersion) || minorVersion < 0) {
      throw fail('INVAL', 'VIX_E_DISK_INVAL', `API version ${majorVersion}.${minorVersion} is not offered (this is ${VIXDISKLIB_VERSION_MAJOR}.x)`, { field: 'majorVersion', found: majorVersion });
    }
    const notes: [number, string][] = [];
    lib.config = configFile ? await readConfigFile(configFile, notes) : DEFAULT_CONFIG;
    lib.logger = new VixLogger(funcs, lib.config);
    lib.initialised = true;
    for (const [level, text] of notes) log(text, level);
    log(`VixDiskLib: initialised (API ${majorVersion}.${minorVersion}${configFile ? `, config ${configFile}` : ''})`);
    return VIX_OK;
  });
}

/** VixDiskLib_Exit: de-initialise; calls after it fail with VIX_E_DISK_NOINIT until Init again */
export function VixDiskLib_Exit(): void {
  if (lib.initialised) log('VixDiskLib: exit');
  lib.initialised = false;
  lib.logger = new VixLogger({});
  lib.config = DEFAULT_CONFIG;
}

/** what Init/InitEx configured (DEFAULT_CONFIG without a config file) */
export function vixDiskLibConfig(): Readonly<VixDiskLibConfig> {
  return lib.config;
}

/** the transports this library offers, colon-separated: "file:nbd:nbdssl" */
export function VixDiskLib_ListTransportModes(): string {
  return TRANSPORT_MODES.join(':');
}

/**
 * VixDiskLib_Connect(connectParams): ConnectEx read-write with the default transports: local
 * disks without a serverName, the server's NBD exports (nbdssl, then nbd) with one
 */
export async function VixDiskLib_Connect(connectParams: VixDiskLibConnectParams | null): Promise<VixDiskLibConnection> {
  return connect(connectParams, false, null);
}

function connect(connectParams: VixDiskLibConnectParams | null, readOnly: boolean, transportModes: string | null): Promise<VixDiskLibConnection> {
  return call(async () => {
    needInit();
    const params = connectParams ?? {};
    // nothing is sent yet: an NBD connection is per export, made by Open (so a server that
    // serves one client, like qemu-nbd without -t, is not used up by a probe)
    const remote = remoteServerOf(params);
    const modes = transportList(transportModes, !!remote);
    if (remote && params.vmxSpec) log(`VixDiskLib: vmxSpec ${params.vmxSpec} has no meaning over NBD: Open names the export`);
    const connection: VixDiskLibConnection = Object.freeze({ local: !remote, vmxSpec: params.vmxSpec ?? null, serverName: params.serverName || null });
    connections.set(connection, { open: true, params: { ...params }, readOnly, remote, modes });
    log(`VixDiskLib: connected to ${remote ? `NBD server ${remote.label} (transports ${modes.join(':')})` : 'local disks'}${readOnly ? ', read-only' : ''}`);
    return connection;
  });
}

/**
 * VixDiskLib_ConnectEx(connectParams, readOnly, snapshotRef, transportModes): as Connect, with
 * the transport modes to try in order ("nbdssl:nbd", "file", ...; null for the default). With
 * readOnly, "later calls to VixDiskLib_Open() are always read-only regardless of the openFlags
 * setting" (the guide), and the calls that write files through the connection (Create, Clone
 * into it, Grow, Unlink, CheckRepair with repair) refuse with VIX_E_DISK_RDONLY. snapshotRef
 * names a vSphere snapshot, which an NBD server has no notion of: it is ignored.
 */
export async function VixDiskLib_ConnectEx(
  connectParams: VixDiskLibConnectParams | null,
  readOnly: boolean,
  _snapshotRef: string | null,
  transportModes: string | null,
): Promise<VixDiskLibConnection> {
  return connect(connectParams, !!readOnly, transportModes);
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

/**
 * VixDiskLib_Open(connection, path, flags): a handle for Read, Write, GetInfo, ... On a
 * connection with a serverName, `path` is the name of an export of that server.
 */
export async function VixDiskLib_Open(connection: VixDiskLibConnection, path: string, flags: number): Promise<VixDiskLibHandle> {
  return call(async () => {
    const cnx = liveConnection(connection);
    const known = VIXDISKLIB_FLAG_OPEN_UNBUFFERED | VIXDISKLIB_FLAG_OPEN_SINGLE_LINK | VIXDISKLIB_FLAG_OPEN_READ_ONLY | VDKIT_FLAG_OPEN_RAW;
    if (!Number.isInteger(flags) || (flags & ~known) !== 0) throw fail('INVAL', 'VIX_E_DISK_INVAL', `unknown open flags 0x${(flags >>> 0).toString(16)}`, { path, field: 'flags', found: flags });
    const raw = (flags & VDKIT_FLAG_OPEN_RAW) !== 0;
    const readOnly = (flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY) !== 0 || cnx.readOnly;
    if (cnx.readOnly && (flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY) === 0) log(`VixDiskLib: ${path} opened read-only: the connection is read-only`);
    if (flags & VIXDISKLIB_FLAG_OPEN_UNBUFFERED) log(`VixDiskLib: ${path}: VIXDISKLIB_FLAG_OPEN_UNBUFFERED has no effect here (no O_DIRECT in Node)`);
    const { disk, transport, remote } = await openByTransport(cnx, path, { readOnly, singleLink: (flags & VIXDISKLIB_FLAG_OPEN_SINGLE_LINK) !== 0, raw });
    const handle: VixDiskLibHandle = Object.freeze({ path, flags });
    handles.set(handle, { disk, connection, transport, remote });
    if (lib.logger.wants(VIX_LOG_WARNING)) {
      // damage tolerated by the open (a qcow2 dirty bit, a VHD checksum ignored, ...)
      const info = await disk.info().catch(() => undefined);
      for (const w of info?.warnings ?? []) log(`VixDiskLib: ${path}: ${w}`, VIX_LOG_WARNING);
    }
    return handle;
  });
}

export async function VixDiskLib_Close(diskHandle: VixDiskLibHandle): Promise<number> {
  return ioCall(diskHandle, async () => {
    const disk = liveDisk(diskHandle);
    handles.get(diskHandle)!.disk = undefined;
    await disk.close();
    return VIX_OK;
  });
}

/** VixDiskLib_GetInfo(diskHandle): geometry, capacity in sectors, adapter, links, parent hint, uuid */
export async function VixDiskLib_GetInfo(diskHandle: VixDiskLibHandle): Promise<VixDiskLibInfo> {
  return ioCall(diskHandle, async () => {
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

/** the transport mode that opened the disk: "file", "nbd" or "nbdssl" */
export function VixDiskLib_GetTransportMode(diskHandle: VixDiskLibHandle): string {
  liveDisk(diskHandle);
  return handles.get(diskHandle)!.transport;
}

/**
 * What Read and Write check alike: the handle is live, the sector range is whole numbers and the
 * buffer holds it; the request is then bytes, the buffer's first sectors viewed (not copied).
 */
function sectorRequest(diskHandle: VixDiskLibHandle, startSector: number, numSectors: number, buf: Uint8Array): { disk: Disk; offset: number; view: Buffer } {
  const disk = liveDisk(diskHandle);
  const path = disk.path;
  sectors(startSector, 'startSector', path);
  sectors(numSectors, 'numSectors', path);
  if (!(buf instanceof Uint8Array)) throw fail('INVAL', 'VIX_E_DISK_INVAL', 'the buffer must be a Buffer or Uint8Array', { path, field: 'buffer' });
  if (buf.length < numSectors * SECTOR_SIZE) {
    throw fail('INVAL', 'VIX_E_BUFFER_TOOSMALL', `the buffer holds ${buf.length} bytes; ${numSectors} sectors need ${numSectors * SECTOR_SIZE}`, { path, field: 'buffer', expected: numSectors * SECTOR_SIZE, found: buf.length });
  }
  return { disk, offset: startSector * SECTOR_SIZE, view: Buffer.from(buf.buffer, buf.byteOffset, numSectors * SECTOR_SIZE) };
}

/** VixDiskLib_Read(diskHandle, startSector, numSectors, readBuffer): fills readBuffer */
export async function VixDiskLib_Read(diskHandle: VixDiskLibHandle, startSector: number, numSectors: number, readBuffer: Uint8Array): Promise<number> {
  return ioCall(diskHandle, async () => {
    const { disk, offset, view } = sectorRequest(diskHandle, startSector, numSectors, readBuffer);
    await disk.readInto(view, offset);
    return VIX_OK;
  });
}

/** VixDiskLib_Write(diskHandle, startSector, numSectors, writeBuffer) */
export async function VixDiskLib_Write(diskHandle: VixDiskLibHandle, startSector: number, numSectors: number, writeBuffer: Uint8Array): Promise<number> {
  return ioCall(diskHandle, async () => {
    const { disk, offset, view } = sectorRequest(diskHandle, startSector, numSectors, writeBuffer);
    await disk.write(offset, view);
    return VIX_OK;
  });
}

/** VixDiskLib_Flush: written data (and the format's metadata) made durable */
export async function VixDiskLib_Flush(diskHandle: VixDiskLibHandle): Promise<number> {
  return ioCall(diskHandle, async () => {
    await liveDisk(diskHandle).flush();
    return VIX_OK;
  });
}

// ---------------------------------------------------------------------------------------------
// Metadata

/** VixDiskLib_ReadMetadata(diskHandle, key): the value; VIX_E_DISK_KEY_NOTFOUND when absent */
export async function VixDiskLib_ReadMetadata(diskHandle: VixDiskLibHandle, key: string): Promise<string> {
  return ioCall(diskHandle, async () => {
    const disk = liveDisk(diskHandle);
    const v = disk.readMetadata(key);
    if (v === undefined) throw fail('INVAL', 'VIX_E_DISK_KEY_NOTFOUND', `no metadata key ${JSON.stringify(key)}`, { path: disk.path, field: key });
    return v;
  });
}

/** VixDiskLib_WriteMetadata(diskHandle, key, val): add or update one entry */
export async function VixDiskLib_WriteMetadata(diskHandle: VixDiskLibHandle, key: string, val: string): Promise<number> {
  return ioCall(diskHandle, async () => {
    await liveDisk(diskHandle).writeMetadata(key, val);
    return VIX_OK;
  });
}

/** VixDiskLib_GetMetadataKeys(diskHandle): every key, in the disk's order */
export async function VixDiskLib_GetMetadataKeys(diskHandle: VixDiskLibHandle): Promise<string[]> {
  return ioCall(diskHandle, async () => liveDisk(diskHandle).metadataKeys());
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
  return ioCall(diskHandle, async () => {
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
