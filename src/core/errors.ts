/**
 * One error class for the whole kit. Codes and numbers come from VixDiskLib's error table
 * (VDDK programming guide, Appendix C; numbers as in VixDiskLib's vix.h snapshot): callers
 * porting VDDK programs get the same names, and `errorText(code)` is VixDiskLib_GetErrorText.
 * Codes the guide lacks but a modern kit needs are added at the end with numbers >= 17000.
 */

export interface ErrorRow {
  /** numeric value (VIX_E_* where VixDiskLib has one) */
  readonly number: number;
  /** default text (VixDiskLib_GetErrorText) */
  readonly text: string;
  /** exit status the CLI uses when this error ends a command */
  readonly exitCode: number;
  /**
   * the text states one cause (VDDK's reason for the code), which is false whenever vdkit raises
   * the code for another reason: shown only when the raise site gave no message of its own
   */
  readonly onlyCause: boolean;
}

const row = (number: number, text: string, exitCode = 1, onlyCause = false): ErrorRow => Object.freeze({ number, text, exitCode, onlyCause });
/** a row whose text names a cause; see ErrorRow.onlyCause */
const causeRow = (number: number, text: string): ErrorRow => row(number, text, 1, true);

export const ERROR_TABLE = Object.freeze({
  SUCCESS: row(0, 'The operation completed successfully', 0),
  FAIL: row(1, 'Unknown error'),
  INVAL: row(16000, 'One of the parameters supplied is invalid'),
  NOINIT: row(16001, 'The disk library has not been initialized'),
  NOIO: row(16002, 'The called function requires the virtual disk to be opened for I/O'),
  PARTIALCHAIN: row(16003, 'The called function cannot be performed on partial chains: please open the parent virtual disk'),
  NEEDSREPAIR: row(16006, 'The specified virtual disk needs repair'),
  OUTOFRANGE: row(16007, 'You have requested access to an area of the virtual disk that is out of bounds'),
  CID_MISMATCH: row(16008, 'The parent virtual disk has been modified since the child was created'),
  CANTSHRINK: causeRow(16009, 'The specified virtual disk cannot be shrunk because it is not the parent disk'),
  PARTMISMATCH: row(16010, 'The partition table on the physical disk has changed since the disk was created'),
  UNSUPPORTEDDISKVERSION: causeRow(16011, 'The version of the virtual disk is newer than the version supported by this program'),
  OPENPARENT: row(16012, 'The parent of this virtual disk could not be opened'),
  NOTSUPPORTED: row(16013, "The specified feature isn't supported by this version"),
  NEEDKEY: row(16014, 'One or more required keys were not provided'),
  INVALIDPARTITIONTABLE: row(16018, 'The partition table is invalid'),
  RAWTOOBIG: row(16024, 'The physical disk is too big'),
  TOOMANYOPENFILES: row(16027, "Reached the host's limit for open files"),
  TOOMANYREDO: row(16028, 'Too many levels of redo logs'),
  RAWTOOSMALL: row(16029, 'The physical disk is too small'),
  INVALIDCHAIN: causeRow(16030, 'Invalid disk chain: cannot mix ESX & hosted style disks in the same chain'),
  // The rows below have names from the guide's table; their numbers are this kit's own.
  RDONLY: row(16004, 'The function was called on a virtual disk opened read-only, but it requires write access'),
  TOOBIGFORFS: row(16021, 'The destination file system does not support large files'),
  NOSPACE: row(16023, 'There is not enough space on the file system for the selected operation'),
  INVALIDDISK: row(16063, 'The file specified is not a virtual disk'),
  PERMISSIONS: row(16031, 'You have requested access to an area of the virtual disk that is prohibited'),
  FILENOTFOUND: row(16032, 'The system cannot find the file specified'),
  FILENOPERMISSION: row(16033, 'Insufficient permission to access file'),
  FILEEXISTS: row(16034, 'The file already exists'),
  NAMETOOLONG: row(16035, 'Filename too long'),
  CMPRDONLY: row(16036, 'Cannot open compressed disk for writing'),
  CMPUNSUP: row(16037, 'Unsupported compression algorithm'),
  ZLIB: row(16038, 'zlib error'),
  UNSUPPORTEDFEATURE: row(16039, 'The virtual disk requires a feature not supported by this program'),
  ENCODING: row(16061, 'Disk encoding error'),
  CANCELLED: row(16040, 'Operation was cancelled', 130),
  FILEIO: row(16041, 'File I/O error'),
  // Not in the VDDK table.
  CORRUPT: row(17000, 'The virtual disk metadata is corrupt'),
  BADDESCRIPTOR: row(17001, 'The disk descriptor is malformed'),
  EXTERNALEXTENT: row(17002, 'An extent file lies outside the descriptor\'s folder or names a device'),
  CLOSED: row(17003, 'The disk has been closed'),
  INTERNAL: row(17999, 'Internal error in vdkit'),
});

export type ErrorCode = keyof typeof ERROR_TABLE;

export function errorText(code: ErrorCode | number): string {
  if (typeof code === 'number') {
    for (const r of Object.values(ERROR_TABLE)) if (r.number === code) return r.text;
    return `Unknown error ${code}`;
  }
  return ERROR_TABLE[code]?.text ?? `Unknown error ${String(code)}`;
}

/**
 * The code's stock text to print under an error's own message, or undefined when the message
 * already holds it or the stock text names a cause the raise site has replaced with the real one
 * (a refused shrink is not "not the parent disk").
 */
export function stockTextBelow(err: DiskError): string | undefined {
  const r = ERROR_TABLE[err.code];
  if (!r || err.message.includes(r.text) || r.onlyCause) return undefined;
  return r.text;
}

export interface ErrorDetails {
  /** file the error is about */
  path?: string;
  /** on-disk structure (e.g. "SparseExtentHeader") */
  struct?: string;
  /** field within it (e.g. "numGTEsPerGT") */
  field?: string;
  expected?: unknown;
  found?: unknown;
  offset?: number;
  length?: number;
  [key: string]: unknown;
}

export class DiskError extends Error {
  readonly code: ErrorCode;
  readonly number: number;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message?: string, details: ErrorDetails = {}, options?: { cause?: unknown }) {
    const base = message ?? ERROR_TABLE[code].text;
    super(decorate(base, details), options);
    this.name = 'DiskError';
    this.code = code;
    this.number = ERROR_TABLE[code].number;
    this.details = details;
  }

  get exitCode(): number {
    return ERROR_TABLE[this.code].exitCode;
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, number: this.number, message: this.message, details: this.details };
  }
}

function decorate(message: string, d: ErrorDetails): string {
  const where: string[] = [];
  if (d.path) where.push(d.path);
  if (d.struct || d.field) where.push([d.struct, d.field].filter(Boolean).join('.'));
  let text = where.length > 0 ? `${where.join(': ')}: ${message}` : message;
  if (d.expected !== undefined || d.found !== undefined) {
    const parts: string[] = [];
    if (d.expected !== undefined) parts.push(`expected ${fmt(d.expected)}`);
    if (d.found !== undefined) parts.push(`found ${fmt(d.found)}`);
    text += ` (${parts.join(', ')})`;
  }
  return text;
}

function fmt(v: unknown): string {
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'string') return JSON.stringify(v);
  return String(v);
}

/** Map a Node system error (from fs) onto the table, keeping it as `cause`. */
export function fromSystemError(err: unknown, path?: string): DiskError {
  if (err instanceof DiskError) return err;
  const e = err as NodeJS.ErrnoException;
  const map: Record<string, ErrorCode> = {
    ENOENT: 'FILENOTFOUND',
    EACCES: 'FILENOPERMISSION',
    EPERM: 'FILENOPERMISSION',
    EEXIST: 'FILEEXISTS',
    ENOSPC: 'NOSPACE',
    EFBIG: 'TOOBIGFORFS',
    EMFILE: 'TOOMANYOPENFILES',
    ENFILE: 'TOOMANYOPENFILES',
    ENAMETOOLONG: 'NAMETOOLONG',
    EROFS: 'RDONLY',
    EISDIR: 'INVALIDDISK',
  };
  const code = (e && typeof e.code === 'string' && map[e.code]) || 'FILEIO';
  return new DiskError(code, `${ERROR_TABLE[code].text}${e?.code ? ` (${e.code})` : ''}`, { path: path ?? e?.path }, { cause: err });
}

/**
 * The `expected` text of "lies past the end" errors: `<= bound` (in `unit`), or, when nothing
 * fits because the file is shorter than the thing itself, that (never a negative bound).
 */
export function atMost(bound: number, unit = ''): string {
  return bound >= 0 ? `<= ${bound}${unit}` : `nothing: the file is too short to hold it (${-bound}${unit} short)`;
}

/**
 * Run the steps in order, each even when one before it failed, then throw the first failure:
 * a close that fails (a flush, one extent, one layer) must not leave the other files open.
 */
export async function runAll(steps: Iterable<() => unknown>): Promise<void> {
  let failed = false;
  let first: unknown;
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      if (!failed) first = err;
      failed = true;
    }
  }
  if (failed) throw first;
}
