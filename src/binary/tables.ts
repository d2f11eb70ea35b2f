/**
 * Tables of fixed-width integers as formats store them: VDI block maps and VMDK grain tables
 * (u32 LE), VHD block allocation tables (u32 BE), VHDX BATs (u64 LE), qcow2 L1/L2 and
 * refcount tables (u64 BE). A table is read into a typed array once and written back as a
 * slice of it; u64 entries are bigint because qcow2 and VHDX keep flag bits above 2^53.
 */

export type ByteOrder = 'le' | 'be';

/** The one method of a byte store a table read needs (storage/ sits above binary/). */
export interface TableSource {
  readInto(into: Buffer, at: number): Promise<unknown>;
}

const HOST_LE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** the host's byte order is not the table's: its bytes swap on the way in and out */
const swaps = (order: ByteOrder) => (order === 'le') !== HOST_LE;

/** `arr` filled from `at` in one read, straight into its memory */
async function readEntries<T extends Uint32Array | BigUint64Array>(arr: T, width: 4 | 8, store: TableSource, at: number, order: ByteOrder): Promise<T> {
  const view = Buffer.from(arr.buffer, arr.byteOffset, arr.length * width);
  await store.readInto(view, at);
  if (swaps(order)) {
    if (width === 4) view.swap32();
    else view.swap64();
  }
  return arr;
}

/** `count` u32 entries from `at`; on a little-endian host an LE table is read with no copy. */
export async function readU32Array(store: TableSource, at: number, count: number, order: ByteOrder = 'le'): Promise<Uint32Array> {
  return readEntries(new Uint32Array(count), 4, store, at, order);
}

/** u32 entries of a buffer already read (its length a multiple of 4), as a new array. */
export function decodeU32Array(buf: Buffer, order: ByteOrder = 'le'): Uint32Array {
  const arr = new Uint32Array(buf.length >>> 2);
  const view = Buffer.from(arr.buffer, arr.byteOffset, arr.length * 4);
  buf.copy(view, 0, 0, view.length);
  if (swaps(order)) view.swap32();
  return arr;
}

/**
 * The on-disk bytes of entries [from, to). On a little-endian host an LE table comes back as a
 * VIEW of `arr` (no copy): write it before changing those entries again.
 */
export function u32Bytes(arr: Uint32Array, from: number, to: number, order: ByteOrder = 'le'): Buffer {
  const view = Buffer.from(arr.buffer, arr.byteOffset + from * 4, (to - from) * 4);
  return swaps(order) ? Buffer.from(view).swap32() : view;
}

/** `count` u64 entries from `at`. */
export async function readU64Array(store: TableSource, at: number, count: number, order: ByteOrder = 'le'): Promise<BigUint64Array> {
  return readEntries(new BigUint64Array(count), 8, store, at, order);
}

/** The on-disk bytes of u64 entries [from, to), always a copy. */
export function u64Bytes(arr: BigUint64Array, from: number, to: number, order: ByteOrder = 'le'): Buffer {
  const out = Buffer.from(Buffer.from(arr.buffer, arr.byteOffset + from * 8, (to - from) * 8));
  return swaps(order) ? out.swap64() : out;
}

/** One u32 as 4 bytes. */
export function u32Buffer(value: number, order: ByteOrder = 'le'): Buffer {
  const b = Buffer.alloc(4);
  if (order === 'le') b.writeUInt32LE(value);
  else b.writeUInt32BE(value);
  return b;
}

/** One u64 (a safe integer or a bigint) as 8 bytes. */
export function u64Buffer(value: number | bigint, order: ByteOrder = 'le'): Buffer {
  const b = Buffer.alloc(8);
  if (order === 'le') b.writeBigUInt64LE(BigInt(value));
  else b.writeBigUInt64BE(BigInt(value));
  return b;
}
