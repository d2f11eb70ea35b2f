/**
 * CRC-32 (IEEE 802.3, the zlib/PNG/GPT one): reflected polynomial 0xEDB88320. GPT checksums its
 * headers and entry arrays with it (initial 0xFFFFFFFF, final XOR 0xFFFFFFFF); LVM2 uses the
 * same table with its own initial value (0xF597A6CF) and no final XOR, which `crc32Update`
 * exposes. Check value of "123456789": 0xCBF43926.
 */

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** the raw register after feeding `buf` into `state` (no inversion either side) */
export function crc32Update(state: number, buf: Uint8Array): number {
  let c = state >>> 0;
  for (let i = 0; i < buf.length; i++) c = TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

/** CRC-32 of `buf` (continuing from `prev`, the CRC of the bytes before it, when given). */
export function crc32(buf: Uint8Array, prev = 0): number {
  return ~crc32Update(~prev >>> 0, buf) >>> 0;
}
