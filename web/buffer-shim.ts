/**
 * `Buffer` for the browser build (esbuild injects this module wherever the library names the
 * global): the npm `buffer` package, Node's API over Uint8Array, plus the 64-bit BigInt reads
 * and writes its version 5 lacks and every format's 64-bit fields use.
 */
// 'buffer/' is the npm package; a bare 'buffer' names Node's built-in
import { Buffer } from 'buffer/index.js';

type BigIntMethods = {
  readBigUInt64LE(offset?: number): bigint;
  readBigUInt64BE(offset?: number): bigint;
  readBigInt64LE(offset?: number): bigint;
  readBigInt64BE(offset?: number): bigint;
  writeBigUInt64LE(value: bigint, offset?: number): number;
  writeBigUInt64BE(value: bigint, offset?: number): number;
  writeBigInt64LE(value: bigint, offset?: number): number;
  writeBigInt64BE(value: bigint, offset?: number): number;
};

const proto = Buffer.prototype as unknown as Uint8Array & Partial<BigIntMethods>;
function view(b: Uint8Array, offset: number): DataView {
  if (!Number.isInteger(offset) || offset < 0 || offset + 8 > b.length) throw new RangeError(`The value of "offset" is out of range. It must be >= 0 and <= ${b.length - 8}. Received ${offset}`);
  return new DataView(b.buffer, b.byteOffset + offset, 8);
}
if (!proto.readBigUInt64LE) {
  const methods: BigIntMethods & ThisType<Uint8Array> = {
    readBigUInt64LE(o = 0) {
      return view(this as never, o).getBigUint64(0, true);
    },
    readBigUInt64BE(o = 0) {
      return view(this as never, o).getBigUint64(0, false);
    },
    readBigInt64LE(o = 0) {
      return view(this as never, o).getBigInt64(0, true);
    },
    readBigInt64BE(o = 0) {
      return view(this as never, o).getBigInt64(0, false);
    },
    writeBigUInt64LE(v, o = 0) {
      view(this as never, o).setBigUint64(0, v, true);
      return o + 8;
    },
    writeBigUInt64BE(v, o = 0) {
      view(this as never, o).setBigUint64(0, v, false);
      return o + 8;
    },
    writeBigInt64LE(v, o = 0) {
      view(this as never, o).setBigInt64(0, v, true);
      return o + 8;
    },
    writeBigInt64BE(v, o = 0) {
      view(this as never, o).setBigInt64(0, v, false);
      return o + 8;
    },
  };
  Object.assign(proto, methods);
}

export { Buffer };
