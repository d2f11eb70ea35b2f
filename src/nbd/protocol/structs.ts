/**
 * One field table per fixed-size NBD wire structure (all big-endian). Variable-length payloads
 * (names, option data, chunk payloads) follow these headers and are handled in codec.ts.
 */
import { defineStruct, u16, u32, u64 } from '../../binary/struct.js';
import { EXTENDED_REPLY_MAGIC, EXTENDED_REQUEST_MAGIC, IHAVEOPT, NBDMAGIC, OPTION_REPLY_MAGIC, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC } from './constants.js';

/** server -> client first bytes of a newstyle handshake */
export const Greeting = defineStruct('NbdGreeting', 'be', [
  { name: 'passwd', type: u64, expect: NBDMAGIC },
  { name: 'optMagic', type: u64, expect: IHAVEOPT },
  { name: 'handshakeFlags', type: u16 },
] as const, 18);

export const ClientFlags = defineStruct('NbdClientFlags', 'be', [{ name: 'clientFlags', type: u32 }] as const, 4);

/** client option header; `length` bytes of option data follow */
export const OptionHeader = defineStruct('NbdOptionHeader', 'be', [
  { name: 'magic', type: u64, expect: IHAVEOPT },
  { name: 'option', type: u32 },
  { name: 'length', type: u32 },
] as const, 16);

/** server reply to an option (all but EXPORT_NAME); `length` bytes of reply data follow */
export const OptionReplyHeader = defineStruct('NbdOptionReplyHeader', 'be', [
  { name: 'magic', type: u64, expect: OPTION_REPLY_MAGIC },
  { name: 'option', type: u32 },
  { name: 'replyType', type: u32 },
  { name: 'length', type: u32 },
] as const, 20);

/** NBD_OPT_EXPORT_NAME answer; 124 zero bytes follow unless both sides set NO_ZEROES */
export const ExportNameReply = defineStruct('NbdExportNameReply', 'be', [
  { name: 'size', type: u64 },
  { name: 'transmissionFlags', type: u16 },
] as const, 10);
export const EXPORT_NAME_PADDING = 124;

/** NBD_REP_INFO payload for NBD_INFO_EXPORT */
export const InfoExport = defineStruct('NbdInfoExport', 'be', [
  { name: 'infoType', type: u16 },
  { name: 'size', type: u64 },
  { name: 'transmissionFlags', type: u16 },
] as const, 12);

/** NBD_REP_INFO payload for NBD_INFO_BLOCK_SIZE */
export const InfoBlockSize = defineStruct('NbdInfoBlockSize', 'be', [
  { name: 'infoType', type: u16 },
  { name: 'minimum', type: u32 },
  { name: 'preferred', type: u32 },
  { name: 'maximum', type: u32 },
] as const, 14);

/**
 * What requests and reply chunks start with (the magic tells them apart): the command's flags
 * and type, and the client's cookie that pairs a reply with its request.
 */
const transmissionHead = <M extends number>(magic: M) =>
  [
    { name: 'magic', type: u32, expect: magic },
    { name: 'flags', type: u16 },
    { name: 'type', type: u16 },
    { name: 'cookie', type: u64 },
  ] as const;

/** an extended header (after NBD_OPT_EXTENDED_HEADERS), request or reply chunk: a 64-bit offset and length */
const extendedHeader = <M extends number>(magic: M) => [...transmissionHead(magic), { name: 'offset', type: u64 }, { name: 'length', type: u64 }] as const;

/** compact request; a WRITE carries `length` payload bytes after it */
export const Request = defineStruct('NbdRequest', 'be', [...transmissionHead(REQUEST_MAGIC), { name: 'offset', type: u64 }, { name: 'length', type: u32 }], 28);

export const ExtendedRequest = defineStruct('NbdExtendedRequest', 'be', extendedHeader(EXTENDED_REQUEST_MAGIC), 32);

export const SimpleReply = defineStruct('NbdSimpleReply', 'be', [
  { name: 'magic', type: u32, expect: SIMPLE_REPLY_MAGIC },
  { name: 'error', type: u32 },
  { name: 'cookie', type: u64 },
] as const, 16);

export const StructuredChunkHeader = defineStruct('NbdStructuredChunk', 'be', [...transmissionHead(STRUCTURED_REPLY_MAGIC), { name: 'length', type: u32 }], 20);

export const ExtendedChunkHeader = defineStruct('NbdExtendedChunk', 'be', extendedHeader(EXTENDED_REPLY_MAGIC), 32);

/** one base:allocation-style extent in an NBD_REPLY_TYPE_BLOCK_STATUS chunk */
export const BlockDescriptor = defineStruct('NbdBlockDescriptor', 'be', [
  { name: 'length', type: u32 },
  { name: 'status', type: u32 },
] as const, 8);

/** one extent in an NBD_REPLY_TYPE_BLOCK_STATUS_EXT chunk */
export const BlockDescriptorExt = defineStruct('NbdBlockDescriptorExt', 'be', [
  { name: 'length', type: u64 },
  { name: 'status', type: u64 },
] as const, 16);

/** fixed head of an error chunk payload: error, message length (message follows) */
export const ErrorChunkHead = defineStruct('NbdErrorChunk', 'be', [
  { name: 'error', type: u32 },
  { name: 'messageLength', type: u16 },
] as const, 6);
