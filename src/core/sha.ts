/**
 * SHA-256 and SHA-1 in plain JavaScript, with node:crypto's createHash shape (update, then
 * digest once). Why not Web Crypto: `crypto.subtle.digest` is one-shot and asynchronous, and the
 * library hashes synchronously and incrementally (checksum's outer hash over every 1 MiB block
 * hash; a VHDX/VDI name-based GUID). A streaming digest is a small loop over FIPS 180-4; it is
 * checked against node:crypto in test/unit/sha.test.ts.
 */

const K256 = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** The block function of a Merkle–Damgård hash over 64-byte blocks, and its state. */
interface Compressor {
  readonly state: Uint32Array;
  /** process the 64 bytes of `view` at `at` */
  block(view: DataView, at: number): void;
}

function sha256(): Compressor {
  const state = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  return {
    state,
    block(view, at) {
      for (let i = 0; i < 16; i++) w[i] = view.getUint32(at + i * 4);
      for (let i = 16; i < 64; i++) {
        const a = w[i - 15]!;
        const b = w[i - 2]!;
        const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
        const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
        w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) | 0;
      }
      // plain loads, not destructuring: a typed array's iterator costs a third of the time here
      let a = state[0]!, b = state[1]!, c = state[2]!, d = state[3]!, e = state[4]!, f = state[5]!, g = state[6]!, h = state[7]!;
      for (let i = 0; i < 64; i++) {
        const s1 = ((e! >>> 6) | (e! << 26)) ^ ((e! >>> 11) | (e! << 21)) ^ ((e! >>> 25) | (e! << 7));
        const ch = (e! & f!) ^ (~e! & g!);
        const t1 = (h! + s1 + ch + K256[i]! + w[i]!) | 0;
        const s0 = ((a! >>> 2) | (a! << 30)) ^ ((a! >>> 13) | (a! << 19)) ^ ((a! >>> 22) | (a! << 10));
        const maj = (a! & b!) ^ (a! & c!) ^ (b! & c!);
        const t2 = (s0 + maj) | 0;
        h = g;
        g = f;
        f = e;
        e = (d! + t1) | 0;
        d = c;
        c = b;
        b = a;
        a = (t1 + t2) | 0;
      }
      state[0]! += a!;
      state[1]! += b!;
      state[2]! += c!;
      state[3]! += d!;
      state[4]! += e!;
      state[5]! += f!;
      state[6]! += g!;
      state[7]! += h!;
    },
  };
}

function sha1(): Compressor {
  const state = new Uint32Array([0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0]);
  const w = new Uint32Array(80);
  return {
    state,
    block(view, at) {
      for (let i = 0; i < 16; i++) w[i] = view.getUint32(at + i * 4);
      for (let i = 16; i < 80; i++) {
        const x = w[i - 3]! ^ w[i - 8]! ^ w[i - 14]! ^ w[i - 16]!;
        w[i] = (x << 1) | (x >>> 31);
      }
      let a = state[0]!, b = state[1]!, c = state[2]!, d = state[3]!, e = state[4]!;
      for (let i = 0; i < 80; i++) {
        let f: number;
        let k: number;
        if (i < 20) [f, k] = [(b! & c!) | (~b! & d!), 0x5a827999];
        else if (i < 40) [f, k] = [b! ^ c! ^ d!, 0x6ed9eba1];
        else if (i < 60) [f, k] = [(b! & c!) | (b! & d!) | (c! & d!), 0x8f1bbcdc];
        else [f, k] = [b! ^ c! ^ d!, 0xca62c1d6];
        const t = (((a! << 5) | (a! >>> 27)) + f + e! + k + w[i]!) | 0;
        e = d;
        d = c;
        c = (b! << 30) | (b! >>> 2);
        b = a;
        a = t;
      }
      state[0]! += a!;
      state[1]! += b!;
      state[2]! += c!;
      state[3]! += d!;
      state[4]! += e!;
    },
  };
}

const ALGORITHMS: Record<string, () => Compressor> = { sha256, sha1 };

/** The part of node:crypto's Hash the library uses. */
export interface SyncHash {
  update(data: Uint8Array | string): SyncHash;
  digest(): Buffer;
  digest(encoding: 'hex'): string;
}

export function createHash(algorithm: string): SyncHash {
  const make = ALGORITHMS[algorithm.toLowerCase()];
  if (!make) throw new Error(`createHash: ${algorithm} is not in the browser build (sha256, sha1)`);
  const c = make();
  const pending = new Uint8Array(64);
  const pendingView = new DataView(pending.buffer);
  let filled = 0;
  let total = 0;
  let done = false;
  const hash: SyncHash = {
    update(data) {
      if (done) throw new Error('createHash: update after digest');
      const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
      total += bytes.length;
      let at = 0;
      if (filled > 0) {
        const n = Math.min(64 - filled, bytes.length);
        pending.set(bytes.subarray(0, n), filled);
        filled += n;
        at = n;
        if (filled < 64) return hash;
        c.block(pendingView, 0);
        filled = 0;
      }
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (; at + 64 <= bytes.length; at += 64) c.block(view, at);
      pending.set(bytes.subarray(at), 0);
      filled = bytes.length - at;
      return hash;
    },
    digest(encoding?: 'hex') {
      if (done) throw new Error('createHash: digest called twice');
      done = true;
      // padding: 0x80, zeros, then the length in bits as a 64-bit big-endian number
      pending[filled++] = 0x80;
      if (filled > 56) {
        pending.fill(0, filled);
        c.block(pendingView, 0);
        filled = 0;
      }
      pending.fill(0, filled);
      pendingView.setUint32(56, Math.floor(total / 0x20000000));
      pendingView.setUint32(60, (total * 8) >>> 0);
      c.block(pendingView, 0);
      const out = Buffer.alloc(c.state.length * 4);
      for (let i = 0; i < c.state.length; i++) out.writeUInt32BE(c.state[i]!, i * 4);
      return (encoding === 'hex' ? out.toString('hex') : out) as never;
    },
  };
  return hash;
}
