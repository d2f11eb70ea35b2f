/**
 * CRC-32C (Castagnoli): polynomial 0x1EDC6F41, reflected 0x82F63B78, initial value 0xFFFFFFFF,
 * final XOR 0xFFFFFFFF (iSCSI, SCTP, ext4, VHDX). Node has no built-in CRC-32C, so this is a
 * table-driven implementation, slicing-by-8: eight 256-entry tables let the loop consume eight
 * bytes per step (a VHDX log entry of 1 MiB costs about a millisecond).
 *
 * `crc32c(buf)` is the checksum of one buffer; to checksum several pieces as one stream, pass
 * the previous result as `prev` (`crc32c(b, crc32c(a))` equals `crc32c(Buffer.concat([a, b]))`).
 * Check value (the standard "123456789" vector): 0xE3069283.
 */

const POLY = 0x82f63b78;

function makeTables(): Uint32Array[] {
  const t0 = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t0[n] = c >>> 0;
  }
  const tables = [t0];
  for (let i = 1; i < 8; i++) {
    const prev = tables[i - 1]!;
    const t = new Uint32Array(256);
    for (let n = 0; n < 256; n++) t[n] = (prev[n]! >>> 8) ^ t0[prev[n]! & 0xff]!;
    tables.push(t);
  }
  return tables;
}

const [T0, T1, T2, T3, T4, T5, T6, T7] = makeTables() as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];

/** CRC-32C of `buf` (continuing from `prev`, the CRC of the bytes before it, when given). */
export function crc32c(buf: Uint8Array, prev = 0): number {
  let c = ~prev >>> 0;
  let i = 0;
  const n = buf.length;
  const end8 = n - (n % 8);
  while (i < end8) {
    const a = (c ^ (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24))) >>> 0;
    c =
      T7[a & 0xff]! ^
      T6[(a >>> 8) & 0xff]! ^
      T5[(a >>> 16) & 0xff]! ^
      T4[a >>> 24]! ^
      T3[buf[i + 4]!]! ^
      T2[buf[i + 5]!]! ^
      T1[buf[i + 6]!]! ^
      T0[buf[i + 7]!]!;
    i += 8;
  }
  while (i < n) c = (c >>> 8) ^ T0[(c ^ buf[i++]!) & 0xff]!;
  return ~c >>> 0;
}

/**
 * The CRC-32C of `buf` computed as if the 4 bytes at `at` (the stored checksum field) were
 * zero, which is how VHDX checksums its headers, region tables and log entries.
 */
export function crc32cWithZeroField(buf: Uint8Array, at: number): number {
  let c = crc32c(buf.subarray(0, at));
  c = crc32c(ZERO4, c);
  return crc32c(buf.subarray(at + 4), c);
}

const ZERO4 = new Uint8Array(4);
