/** All-zero tests for data buffers: one shared zero block and memcmp, no allocation, no byte loop. */

const ZEROS = Buffer.alloc(64 * 1024);

/** whether buf[from, to) is all zero bytes */
export function isZero(buf: Uint8Array, from = 0, to = buf.length): boolean {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let at = from; at < to; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, to - at);
    if (b.compare(ZEROS, 0, n, at, at + n) !== 0) return false;
  }
  return true;
}
