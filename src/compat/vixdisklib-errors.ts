/**
 * VixDiskLib's errors: every name of the VDDK guide's Table C-1 (with its text), the general
 * VIX codes and every VIX_E_DISK_* code of VMware's public vix.h, each with a number, and the
 * VixDiskLibError every facade call rejects with.
 *
 * Where the numbers come from (`origin` on every row)
 * - 'vix.h': the name is defined in VMware's public vix.h (the header VixDiskLib ships a
 *   snapshot of); the number is vix.h's. VDDK programs compare against these.
 * - 'vdkit': the guide's table lists the name but vix.h defines no number for it (RDONLY,
 *   FILENOTFOUND, CANCELLED, the GEN* names ...). The number is vdkit's own, so a VDDK program
 *   ported here must use the exported constant, never a literal:
 *   - names that are also vdkit DiskError codes keep that code's number (ERROR_TABLE), so a
 *     DiskError's `number` and a VixDiskLibError's `vixError` agree;
 *   - the others, which vdkit never raises, are numbered from VDKIT_OWN_BASE (16900) up in the
 *     table's order, a block vix.h leaves empty.
 */
import { DiskError, ERROR_TABLE, fromSystemError, type ErrorCode } from '../core/errors.js';

export type VixNumberOrigin = 'vix.h' | 'vdkit';

export interface VixRow {
  readonly number: number;
  readonly text: string;
  readonly origin: VixNumberOrigin;
}

/** first number of vdkit's own block for guide names that neither vix.h nor ERROR_TABLE numbers */
export const VDKIT_OWN_BASE = 16900;

let ownNext = VDKIT_OWN_BASE;
const vixh = (number: number, text: string): VixRow => ({ number, text, origin: 'vix.h' });
/** a vdkit DiskError code's number (ERROR_TABLE) */
const kit = (code: ErrorCode, text: string): VixRow => ({ number: ERROR_TABLE[code].number, text, origin: 'vdkit' });
/** the next number of vdkit's own block */
const own = (text: string): VixRow => ({ number: ownNext++, text, origin: 'vdkit' });

/**
 * Every error name with its number and text (Table C-1's text where the guide has the name;
 * for vix.h names the guide lacks, what the name says).
 */
export const VIX_ERRORS: Readonly<Record<string, VixRow>> = Object.freeze({
  VIX_OK: vixh(0, 'The operation completed successfully'),
  // vix.h general errors
  VIX_E_FAIL: vixh(1, 'Unknown error'),
  VIX_E_OUT_OF_MEMORY: vixh(2, 'Memory allocation failed: out of memory'),
  VIX_E_INVALID_ARG: vixh(3, 'One of the parameters was invalid'),
  VIX_E_FILE_NOT_FOUND: vixh(4, 'A file was not found'),
  VIX_E_OBJECT_IS_BUSY: vixh(5, 'This function cannot be performed because the handle is executing another function'),
  VIX_E_NOT_SUPPORTED: vixh(6, 'The operation is not supported'),
  VIX_E_FILE_ERROR: vixh(7, 'A file access error occurred on the host or guest operating system'),
  VIX_E_DISK_FULL: vixh(8, 'An error occurred while writing a file; the disk is full'),
  VIX_E_INCORRECT_FILE_TYPE: vixh(9, 'An error occurred while accessing a file: wrong file type'),
  VIX_E_CANCELLED: vixh(10, 'The operation was canceled'),
  VIX_E_FILE_READ_ONLY: vixh(11, 'The file is write-protected'),
  VIX_E_FILE_ALREADY_EXISTS: vixh(12, 'The file already exists'),
  VIX_E_FILE_ACCESS_ERROR: vixh(13, 'You do not have access rights to this file'),
  VIX_E_REQUIRES_LARGE_FILES: vixh(14, 'The file system does not support sufficiently large files'),
  VIX_E_FILE_ALREADY_LOCKED: vixh(15, 'The file is already in use'),
  VIX_E_FILE_TOO_BIG: vixh(21, 'The file is too big for the file system'),
  VIX_E_FILE_NAME_INVALID: vixh(22, 'The file name is not valid'),
  VIX_E_ALREADY_EXISTS: vixh(23, 'The object already exists'),
  VIX_E_BUFFER_TOOSMALL: vixh(24, 'The buffer is too small'),
  VIX_E_OBJECT_NOT_FOUND: vixh(25, 'The object was not found'),
  // vix.h host (network) errors: what the nbd and nbdssl transports report
  VIX_E_HOST_NETBLKDEV_HANDSHAKE: vixh(14006, 'The network block device handshake failed'),
  VIX_E_HOST_SOCKET_CREATION_ERROR: vixh(14007, 'Cannot create a socket'),
  VIX_E_HOST_SERVER_NOT_FOUND: vixh(14008, 'The server was not found'),
  VIX_E_HOST_NETWORK_CONN_REFUSED: vixh(14009, 'The server refused the connection'),
  VIX_E_HOST_TCP_SOCKET_ERROR: vixh(14010, 'A TCP socket error occurred'),
  VIX_E_HOST_TCP_CONN_LOST: vixh(14011, 'The TCP connection was lost'),
  // Table C-1, common errors
  VIX_E_DISK_SUCCESS: vixh(0, 'The operation completed successfully'),
  VIX_E_DISK_INVAL: vixh(16000, 'One of the parameters supplied is invalid'),
  VIX_E_DISK_NOINIT: vixh(16001, 'The disk library has not been initialized'),
  VIX_E_DISK_ASYNC: own('Operation completes asynchronously'),
  VIX_E_DISK_NOIO: vixh(16002, 'The called function requires the virtual disk to be opened for I/O'),
  VIX_E_DISK_PARTIALCHAIN: vixh(16003, 'The called function cannot be performed on partial chains: please open the parent virtual disk'),
  VIX_E_DISK_RDONLY: kit('RDONLY', 'The function was called on a virtual disk opened read-only, but it requires write access'),
  // underlying library errors
  VIX_E_DISK_IOMGR: own('<xxx> I/O Manager error should follow'),
  VIX_E_DISK_FILEIO: kit('FILEIO', '<xxx> File Library error should follow'),
  VIX_E_DISK_SYSTEM: own('<xxx> System error should follow'),
  VIX_E_DISK_CRYPTO: own('<xxx> Crypto error should follow'),
  VIX_E_DISK_KEYSAFE: own('<xxx> Key safe error should follow'),
  // specific API errors
  VIX_E_DISK_TOOBIGFORFS: kit('TOOBIGFORFS', 'The destination file system does not support large files'),
  VIX_E_DISK_NOSPACE: kit('NOSPACE', 'There is not enough space on the file system for the selected operation'),
  VIX_E_DISK_NEEDSREPAIR: vixh(16006, 'The specified virtual disk needs repair'),
  VIX_E_DISK_INVALIDDISK: vixh(16063, 'The file specified is not a virtual disk'),
  VIX_E_DISK_PERMISSIONS: kit('PERMISSIONS', 'You have requested access to an area of the virtual disk that is prohibited'),
  VIX_E_DISK_OUTOFRANGE: vixh(16007, 'You have requested access to an area of the virtual disk that is out of bounds'),
  VIX_E_DISK_CID_MISMATCH: vixh(16008, 'The parent virtual disk has been modified since the child was created'),
  VIX_E_DISK_CANTSHRINK: vixh(16009, 'The specified virtual disk cannot be shrunk because it is not the parent disk'),
  VIX_E_DISK_INVALIDDEVICE: own('The specified device is not a valid physical disk device'),
  VIX_E_DISK_PARTMISMATCH: vixh(16010, 'The partition table on the physical disk has changed since the disk was created'),
  VIX_E_DISK_UNSUPPORTEDDISKVERSION: vixh(16011, 'The version of the virtual disk is newer than the version supported by this program'),
  VIX_E_DISK_OPENPARENT: vixh(16012, 'The parent of this virtual disk could not be opened'),
  VIX_E_DISK_NOTSUPPORTED: vixh(16013, "The specified feature isn't supported by this version"),
  VIX_E_DISK_FILENOTFOUND: kit('FILENOTFOUND', 'The system cannot find the file specified'),
  VIX_E_DISK_NEEDKEY: vixh(16014, 'One or more required keys were not provided'),
  VIX_E_DISK_NOKEYOVERRIDE: vixh(16015, "Won't create unencrypted child of encrypted disk without explicit request"),
  VIX_E_DISK_NOTENCRYPTED: vixh(16016, 'Not an encrypted disk'),
  VIX_E_DISK_NOKEY: vixh(16017, 'No keys supplied for encrypting disk'),
  VIX_E_DISK_INVALIDPARTITIONTABLE: vixh(16018, 'The partition table is invalid'),
  VIX_E_DISK_NOTNORMAL: vixh(16019, 'Only sparse extents with embedded descriptors may be encrypted'),
  VIX_E_DISK_NOTENCDESC: vixh(16020, 'Not an encrypted descriptor file'),
  VIX_E_DISK_CANCELLED: kit('CANCELLED', 'Operation was cancelled'),
  VIX_E_DISK_NBD: own('<xxx> Network block device error should follow'),
  VIX_E_DISK_NOTVMFS: own("File system isn't VMFS"),
  VIX_E_DISK_BKLSTDEPRECATED: own('Block list server error should follow'),
  VIX_E_DISK_RAWTOOBIG: vixh(16024, 'The physical disk is too big: maximum size allowed is DISKLIB_RAWDISK_MAX_CAPACITY_TEXT'),
  VIX_E_DISK_FILENOPERMISSION: kit('FILENOPERMISSION', 'Insufficient permission to access file'),
  VIX_E_DISK_FILEEXISTS: kit('FILEEXISTS', 'The file already exists'),
  VIX_E_DISK_TOOMANYOPENFILES: vixh(16027, "Reached the host's limit for open files"),
  VIX_E_DISK_TOOMANYREDO: vixh(16028, 'Too many levels of redo logs'),
  VIX_E_DISK_RAWTOOSMALL: vixh(16029, 'The physical disk is too small'),
  VIX_E_DISK_INVALIDCHAIN: vixh(16030, 'Invalid disk chain: cannot mix ESX & hosted style disks in the same chain'),
  VIX_E_DISK_THIRDPARTY: own('Third Party Image error description should follow'),
  VIX_E_DISK_NAMETOOLONG: kit('NAMETOOLONG', 'Filename too long'),
  VIX_E_DISK_CMPRDONLY: kit('CMPRDONLY', 'Cannot open compressed disk for writing'),
  VIX_E_DISK_CANTCMP: own('Cannot compress this type of disk'),
  VIX_E_DISK_CMPUNSUP: kit('CMPUNSUP', 'Unsupported compression algorithm'),
  VIX_E_DISK_INVALIDMULTIWRITER: own('Thin/TBZ disks cannot be opened in multiwriter mode'),
  VIX_E_DISK_GENFILE: own('Generic Genfile error'),
  VIX_E_DISK_INVCHILDGEN: own('Parent generation disk has been modified'),
  VIX_E_DISK_INVGENATTACH: own('Trying to open/attach invalid genlink chain'),
  VIX_E_DISK_INVGENCREATE: own('Unsupported number of genlinks in the chain'),
  VIX_E_DISK_INVGENCREATEOPENCHAIN: own('Genlinks can be only created by opening the complete chain'),
  VIX_E_DISK_UPDATEGEN: own('Generation update error'),
  VIX_E_DISK_ZLIB: kit('ZLIB', '<xxx> zlib error should follow'),
  VIX_E_DISK_UNSUPPORTEDFEATURE: kit('UNSUPPORTEDFEATURE', 'The virtual disk requires a feature not supported by this program'),
  VIX_E_DISK_NOPERMISSION: own('Insufficient permission to perform this operation'),
  VIX_E_DISK_MARKEDASNODELETE: own('The disk is marked as non-deletable'),
  VIX_E_DISK_CHANGETRACK: own('Change tracking error should follow'),
  VIX_E_DISK_ENCODING: vixh(16061, 'Disk encoding error'),
  VIX_E_DISK_PLUGIN: own('Plug-in error should follow'),
  VIX_E_DISK_NODEVICE: vixh(16065, 'Device does not exist'),
  VIX_E_DISK_UNSUPPORTEDDEVICE: vixh(16066, 'Operation is not supported on this type of device'),
  // vix.h disk codes the guide's table lacks (texts: what the name says)
  VIX_E_DISK_NEEDVMFS: vixh(16022, 'The operation needs a VMFS file system'),
  VIX_E_DISK_KEY_NOTFOUND: vixh(16052, 'The metadata key is not found'),
  VIX_E_DISK_SUBSYSTEM_INIT_FAIL: vixh(16053, 'The disk library could not initialize a subsystem'),
  VIX_E_DISK_INVALID_CONNECTION: vixh(16054, 'The connection is not valid'),
  VIX_E_DISK_CANTREPAIR: vixh(16062, 'The virtual disk cannot be repaired'),
  VIX_E_DISK_NOLICENSE: vixh(16064, 'No license for this operation'),
  VIX_E_DISK_CAPACITY_MISMATCH: vixh(16067, 'The child and the parent disk differ in capacity'),
  VIX_E_DISK_PARENT_NOTALLOWED: vixh(16068, 'This disk may not have a parent'),
  VIX_E_DISK_ATTACH_ROOTLINK: vixh(16069, 'Only the root link of a chain can be attached'),
});

export type VixErrorName = keyof typeof VIX_ERRORS & string;

/** the names whose numbers are vdkit's own (vix.h does not define them) */
export const VDKIT_OWN_NUMBERS: readonly VixErrorName[] = Object.freeze(Object.keys(VIX_ERRORS).filter((n) => VIX_ERRORS[n]!.origin === 'vdkit'));

const num = (name: string): number => VIX_ERRORS[name]!.number;
export const VIX_OK = 0;
export const VIX_E_FAIL = num('VIX_E_FAIL');
export const VIX_E_INVALID_ARG = num('VIX_E_INVALID_ARG');
export const VIX_E_NOT_SUPPORTED = num('VIX_E_NOT_SUPPORTED');
export const VIX_E_CANCELLED = num('VIX_E_CANCELLED');
export const VIX_E_BUFFER_TOOSMALL = num('VIX_E_BUFFER_TOOSMALL');
export const VIX_E_HOST_NETBLKDEV_HANDSHAKE = num('VIX_E_HOST_NETBLKDEV_HANDSHAKE');
export const VIX_E_HOST_SERVER_NOT_FOUND = num('VIX_E_HOST_SERVER_NOT_FOUND');
export const VIX_E_HOST_NETWORK_CONN_REFUSED = num('VIX_E_HOST_NETWORK_CONN_REFUSED');
export const VIX_E_HOST_TCP_SOCKET_ERROR = num('VIX_E_HOST_TCP_SOCKET_ERROR');
export const VIX_E_HOST_TCP_CONN_LOST = num('VIX_E_HOST_TCP_CONN_LOST');
export const VIX_E_DISK_INVAL = num('VIX_E_DISK_INVAL');
export const VIX_E_DISK_NOINIT = num('VIX_E_DISK_NOINIT');
export const VIX_E_DISK_NOIO = num('VIX_E_DISK_NOIO');
export const VIX_E_DISK_PARTIALCHAIN = num('VIX_E_DISK_PARTIALCHAIN');
export const VIX_E_DISK_RDONLY = num('VIX_E_DISK_RDONLY');
export const VIX_E_DISK_FILEIO = num('VIX_E_DISK_FILEIO');
export const VIX_E_DISK_TOOBIGFORFS = num('VIX_E_DISK_TOOBIGFORFS');
export const VIX_E_DISK_NOSPACE = num('VIX_E_DISK_NOSPACE');
export const VIX_E_DISK_NEEDSREPAIR = num('VIX_E_DISK_NEEDSREPAIR');
export const VIX_E_DISK_INVALIDDISK = num('VIX_E_DISK_INVALIDDISK');
export const VIX_E_DISK_PERMISSIONS = num('VIX_E_DISK_PERMISSIONS');
export const VIX_E_DISK_OUTOFRANGE = num('VIX_E_DISK_OUTOFRANGE');
export const VIX_E_DISK_CID_MISMATCH = num('VIX_E_DISK_CID_MISMATCH');
export const VIX_E_DISK_CANTSHRINK = num('VIX_E_DISK_CANTSHRINK');
export const VIX_E_DISK_OPENPARENT = num('VIX_E_DISK_OPENPARENT');
export const VIX_E_DISK_NOTSUPPORTED = num('VIX_E_DISK_NOTSUPPORTED');
export const VIX_E_DISK_FILENOTFOUND = num('VIX_E_DISK_FILENOTFOUND');
export const VIX_E_DISK_FILEEXISTS = num('VIX_E_DISK_FILEEXISTS');
export const VIX_E_DISK_INVALIDCHAIN = num('VIX_E_DISK_INVALIDCHAIN');
export const VIX_E_DISK_CANCELLED = num('VIX_E_DISK_CANCELLED');
export const VIX_E_DISK_KEY_NOTFOUND = num('VIX_E_DISK_KEY_NOTFOUND');
export const VIX_E_DISK_INVALID_CONNECTION = num('VIX_E_DISK_INVALID_CONNECTION');
export const VIX_E_DISK_CAPACITY_MISMATCH = num('VIX_E_DISK_CAPACITY_MISMATCH');

/** vdkit codes without a VIX_E_DISK_ name of their own, onto the nearest one */
const NEAREST: Partial<Record<ErrorCode, VixErrorName>> = {
  SUCCESS: 'VIX_OK',
  FAIL: 'VIX_E_FAIL',
  INTERNAL: 'VIX_E_FAIL',
  CORRUPT: 'VIX_E_DISK_NEEDSREPAIR',
  BADDESCRIPTOR: 'VIX_E_DISK_INVALIDDISK',
  EXTERNALEXTENT: 'VIX_E_DISK_PERMISSIONS',
  CLOSED: 'VIX_E_DISK_NOIO',
};

/** the VIX name a vdkit DiskError code is reported under */
export function vixNameOf(code: ErrorCode): VixErrorName {
  const name = `VIX_E_DISK_${code}`;
  if (name in VIX_ERRORS) return name;
  return NEAREST[code] ?? 'VIX_E_FAIL';
}

/**
 * What every call rejects with: a DiskError (its `code` and `number` are vdkit's) that also
 * carries the VixError: `vixCode` (VIX_E_* name) and `vixError` (its number, as VDDK returns it).
 */
export class VixDiskLibError extends DiskError {
  readonly vixCode: VixErrorName;
  readonly vixError: number;

  constructor(from: DiskError, vixCode?: VixErrorName) {
    super(from.code, undefined, from.details, { cause: from.cause ?? from });
    this.name = 'VixDiskLibError';
    this.message = from.message;
    this.vixCode = vixCode ?? vixNameOf(from.code);
    this.vixError = VIX_ERRORS[this.vixCode]?.number ?? from.number;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), vixCode: this.vixCode, vixError: this.vixError };
  }
}

/**
 * @internal whatever a call body threw, as a VixDiskLibError. An exception without a system
 * error code (a TypeError, a RangeError: a vdkit bug, not a failed file operation) is INTERNAL
 * (VIX_E_FAIL), which also reaches the panic callback, instead of passing for a file I/O error.
 */
export function toVixError(err: unknown): VixDiskLibError {
  if (err instanceof VixDiskLibError) return err;
  if (err instanceof DiskError) return new VixDiskLibError(err);
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') {
    const what = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    return new VixDiskLibError(new DiskError('INTERNAL', `internal error in vdkit (${what})`, {}, { cause: err }));
  }
  return new VixDiskLibError(fromSystemError(err));
}

/** @internal a rejection with a VDDK code vdkit has no DiskError code for */
export function vixFail(code: ErrorCode, vixCode: VixErrorName, message: string, details: Record<string, unknown> = {}): VixDiskLibError {
  return new VixDiskLibError(new DiskError(code, message, details), vixCode);
}
