/**
 * NBD wire constants (NetworkBlockDevice doc/proto.md, plus the extended-headers extension).
 * Names follow the spec with the NBD_ prefix dropped; values are protocol constants, never
 * host errno values (see NOTES.md).
 */

export const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT", newstyle greeting and option prefix
export const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const EXTENDED_REQUEST_MAGIC = 0x21e41c71;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const EXTENDED_REPLY_MAGIC = 0x6e8a278c;

/** handshake flags (server, u16) */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
/** client flags (u32) */
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

export const Opt = Object.freeze({
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
});

const ERR = 0x80000000;
export const Rep = Object.freeze({
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: (ERR | 1) >>> 0,
  ERR_POLICY: (ERR | 2) >>> 0,
  ERR_INVALID: (ERR | 3) >>> 0,
  ERR_PLATFORM: (ERR | 4) >>> 0,
  ERR_TLS_REQD: (ERR | 5) >>> 0,
  ERR_UNKNOWN: (ERR | 6) >>> 0,
  ERR_SHUTDOWN: (ERR | 7) >>> 0,
  ERR_BLOCK_SIZE_REQD: (ERR | 8) >>> 0,
  ERR_TOO_BIG: (ERR | 9) >>> 0,
  ERR_EXT_HEADER_REQD: (ERR | 10) >>> 0,
});

export const Info = Object.freeze({
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
});

/** transmission flags (u16) */
export const TFlag = Object.freeze({
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
  BLOCK_STATUS_PAYLOAD: 1 << 12,
});

export const Cmd = Object.freeze({
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
});

export const CmdFlag = Object.freeze({
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
  PAYLOAD_LEN: 1 << 5,
});

export const ReplyFlag = Object.freeze({ DONE: 1 << 0 });

export const ReplyType = Object.freeze({
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  BLOCK_STATUS_EXT: 6,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
});

/** error values carried in replies (protocol constants that happen to equal Linux errno numbers) */
export const NbdErr = Object.freeze({
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
});

/** base:allocation status bits */
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;

export const CONTEXT_BASE_ALLOCATION = 'base:allocation';
export const CONTEXT_ALLOCATION_DEPTH = 'qemu:allocation-depth';
/** qemu's prefix of a persistent dirty bitmap's context: qemu:dirty-bitmap:NAME */
export const CONTEXT_DIRTY_BITMAP = 'qemu:dirty-bitmap:';

/** spec limit for every string on the wire (names, descriptions, messages, context names) */
export const MAX_STRING = 4096;
/** largest READ/WRITE payload this implementation advertises and accepts (2^25) */
export const MAX_PAYLOAD = 32 * 1024 * 1024;
export const DEFAULT_PORT = 10809;

/** the name of a code in a frozen table, for messages and tests */
export function nameOf(table: Readonly<Record<string, number>>, value: number): string {
  for (const [k, v] of Object.entries(table)) if (v === value) return k;
  return `0x${value.toString(16)}`;
}
