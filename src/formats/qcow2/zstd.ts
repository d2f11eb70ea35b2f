/**
 * zstd compressed clusters (compression_type 1, incompatible bit 3; qcow2.md §6). A cluster's
 * descriptor spans whole 512-byte sectors, so one zstd frame is followed by padding or the next
 * cluster's bytes; the decoder needs the frame alone. Its end is found by walking the frame
 * header and the block headers (RFC 8878 §3.1.1), which give every block's stored size, without
 * decoding anything. The decoded size is bounded by the cluster size, never by a field: a frame
 * that declares another content size is refused before the library allocates for it.
 */
import { DiskError } from '../../core/errors.js';
import { loadZstd } from '../../core/platform.js';

export const ZSTD_MAGIC = 0xfd2fb528;
/** RFC 8878 §3.1.1.2.4: no block holds more than 128 KiB */
const MAX_BLOCK = 128 * 1024;
/** what QEMU passes to ZSTD_compress (ZSTD_CLEVEL_DEFAULT) */
export const ZSTD_DEFAULT_LEVEL = 3;

export interface FrameFacts {
  /** bytes of the frame, header to checksum */
  length: number;
  /** Frame_Content_Size when the header has one */
  contentSize?: number;
}

/** Why a span of bytes is not one zstd frame, or the frame's length and declared size. */
export function walkZstdFrame(b: Uint8Array): FrameFacts | string {
  if (b.length < 6) return 'too short for a zstd frame header';
  const magic = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
  if (magic !== ZSTD_MAGIC) return `no zstd magic (found 0x${magic.toString(16)})`;
  const fhd = b[4]!;
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  if (fhd & 0x08) return 'reserved bit of the frame header descriptor is set';
  const checksum = (fhd >> 2) & 1;
  const dictBytes = [0, 1, 2, 4][fhd & 3]!;
  let at = 5 + (single ? 0 : 1);
  if (at + dictBytes > b.length) return 'frame header runs past the compressed data';
  let dict = 0;
  for (let i = 0; i < dictBytes; i++) dict += b[at + i]! * 2 ** (8 * i);
  if (dict !== 0) return `frame needs dictionary ${dict}`;
  at += dictBytes;
  const fcsBytes = [single ? 1 : 0, 2, 4, 8][fcsFlag]!;
  if (at + fcsBytes > b.length) return 'frame header runs past the compressed data';
  let contentSize: number | undefined;
  if (fcsBytes > 0) {
    contentSize = 0;
    for (let i = 0; i < fcsBytes; i++) contentSize += b[at + i]! * 2 ** (8 * i);
    if (fcsBytes === 2) contentSize += 256;
  }
  at += fcsBytes;
  for (;;) {
    if (at + 3 > b.length) return 'block header runs past the compressed data';
    const hdr = b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16);
    at += 3;
    const last = hdr & 1;
    const type = (hdr >> 1) & 3;
    const size = hdr >>> 3;
    if (type === 3) return 'reserved block type';
    if (size > MAX_BLOCK) return `block of ${size} bytes (at most ${MAX_BLOCK})`;
    at += type === 1 ? 1 : size;
    if (at > b.length) return 'block runs past the compressed data';
    if (last) break;
  }
  at += checksum ? 4 : 0;
  if (at > b.length) return 'content checksum runs past the compressed data';
  return { length: at, contentSize };
}

/**
 * One compressed cluster: the zstd frame at the start of `src` (the descriptor's bytes) decoded
 * into exactly `clusterSize` bytes, as QEMU requires; anything else is a DiskError naming the
 * L2 entry (`where.field`) and the guest offset.
 */
export async function unzstdCluster(src: Buffer, clusterSize: number, where: { path: string; field: string; found: number; guest: number }): Promise<Buffer> {
  const ctx = { path: where.path, struct: 'L2 table', field: where.field, found: where.found, guestOffset: where.guest, compression: 'zstd' };
  const frame = walkZstdFrame(src);
  if (typeof frame === 'string') throw new DiskError('CORRUPT', `compressed cluster at guest offset ${where.guest} is not a zstd frame: ${frame}`, ctx);
  if (frame.contentSize !== undefined && frame.contentSize !== clusterSize) {
    throw new DiskError('CORRUPT', `compressed cluster at guest offset ${where.guest} declares ${frame.contentSize} bytes, not one cluster`, { ...ctx, expected: clusterSize });
  }
  const zstd = await loadZstd();
  let out: Uint8Array;
  try {
    out = zstd.decompress(src.subarray(0, frame.length), clusterSize);
  } catch (err) {
    throw new DiskError('CORRUPT', `compressed cluster at guest offset ${where.guest} does not decode (${(err as Error).message})`, ctx, { cause: err });
  }
  if (out.length !== clusterSize) {
    throw new DiskError('CORRUPT', `compressed cluster at guest offset ${where.guest} decodes to ${out.length} bytes, not one cluster`, { ...ctx, expected: clusterSize });
  }
  return Buffer.from(out.buffer, out.byteOffset, out.length);
}
