/**
 * Inflate (RFC 1951) and its zlib wrapper (RFC 1950), synchronous, for the browser build: the
 * VMDK sparse/streamOptimized and qcow2 read paths inflate one grain or cluster inline, as
 * node:zlib's inflateSync does there. DecompressionStream is asynchronous only. This decoder
 * reads a code bit by bit against canonical code counts (the shape of zlib's puff.c, the
 * reference decoder): small rather than fast; a table-driven decoder is a later step if
 * compressed images in the browser need the speed. Checked against node:zlib in
 * test/unit/inflate.test.ts.
 */

export interface InflateOptions {
  /** more output than this is an error (node:zlib: a RangeError) */
  maxOutputLength?: number;
  /** zlib's Z_SYNC_FLUSH (2): input that ends before the last block is not an error */
  finishFlush?: number;
}

const Z_SYNC_FLUSH = 2;
const LENGTH_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577];
const DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
const CODE_LENGTH_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/** the input ran out before the last block */
class EndOfInput extends Error {}

/** a canonical Huffman code: how many codes of each length, and the symbols in code order */
interface Code {
  counts: Uint16Array;
  symbols: Uint16Array;
}

function buildCode(lengths: ArrayLike<number>, n: number): Code {
  const counts = new Uint16Array(16);
  for (let i = 0; i < n; i++) counts[lengths[i]!]!++;
  counts[0] = 0;
  let left = 1;
  for (let len = 1; len < 16; len++) {
    left = left * 2 - counts[len]!;
    if (left < 0) throw new Error('inflate: over-subscribed code lengths');
  }
  const offsets = new Uint16Array(16);
  for (let len = 1; len < 15; len++) offsets[len + 1] = offsets[len]! + counts[len]!;
  const symbols = new Uint16Array(n);
  for (let s = 0; s < n; s++) if (lengths[s] !== 0) symbols[offsets[lengths[s]!]!++] = s;
  return { counts, symbols };
}

let fixed: { lit: Code; dist: Code } | undefined;
function fixedCodes(): { lit: Code; dist: Code } {
  if (!fixed) {
    const l = new Uint8Array(288);
    l.fill(8, 0, 144).fill(9, 144, 256).fill(7, 256, 280).fill(8, 280, 288);
    fixed = { lit: buildCode(l, 288), dist: buildCode(new Uint8Array(30).fill(5), 30) };
  }
  return fixed;
}

class Inflater {
  private pos = 0;
  private bitBuf = 0;
  private bitCount = 0;
  private out: Uint8Array;
  private outLen = 0;
  constructor(
    private readonly data: Uint8Array,
    start: number,
    private readonly max: number,
  ) {
    this.pos = start;
    this.out = new Uint8Array(Math.min(max, Math.max(1024, data.length * 4)));
  }

  private bits(n: number): number {
    while (this.bitCount < n) {
      if (this.pos >= this.data.length) throw new EndOfInput();
      this.bitBuf |= this.data[this.pos++]! << this.bitCount;
      this.bitCount += 8;
    }
    const v = this.bitBuf & ((1 << n) - 1);
    this.bitBuf >>>= n;
    this.bitCount -= n;
    return v;
  }

  private decode(c: Code): number {
    let code = 0;
    let first = 0;
    let index = 0;
    for (let len = 1; len < 16; len++) {
      code |= this.bits(1);
      const count = c.counts[len]!;
      if (code - first < count) return c.symbols[index + code - first]!;
      index += count;
      first = (first + count) << 1;
      code <<= 1;
    }
    throw new Error('inflate: invalid code');
  }

  private room(n: number): void {
    const need = this.outLen + n;
    if (need <= this.out.length) return;
    if (need > this.max) throw new RangeError(`inflate: output larger than ${this.max} bytes`);
    const grown = new Uint8Array(Math.min(this.max, Math.max(need, this.out.length * 2)));
    grown.set(this.out.subarray(0, this.outLen));
    this.out = grown;
  }

  private stored(): void {
    this.bitBuf = 0;
    this.bitCount = 0;
    if (this.pos + 4 > this.data.length) throw new EndOfInput();
    const d = this.data;
    const len = d[this.pos]! | (d[this.pos + 1]! << 8);
    const nlen = d[this.pos + 2]! | (d[this.pos + 3]! << 8);
    if (len !== (~nlen & 0xffff)) throw new Error('inflate: stored block length check failed');
    this.pos += 4;
    const n = Math.min(len, d.length - this.pos);
    this.room(n);
    this.out.set(d.subarray(this.pos, this.pos + n), this.outLen);
    this.outLen += n;
    this.pos += n;
    if (n < len) throw new EndOfInput();
  }

  private codes(lit: Code, dist: Code): void {
    for (;;) {
      let sym = this.decode(lit);
      if (sym < 256) {
        this.room(1);
        this.out[this.outLen++] = sym;
        continue;
      }
      if (sym === 256) return;
      sym -= 257;
      if (sym >= 29) throw new Error('inflate: invalid length symbol');
      const len = LENGTH_BASE[sym]! + this.bits(LENGTH_EXTRA[sym]!);
      const ds = this.decode(dist);
      if (ds >= 30) throw new Error('inflate: invalid distance symbol');
      const back = DIST_BASE[ds]! + this.bits(DIST_EXTRA[ds]!);
      if (back > this.outLen) throw new Error('inflate: distance too far back');
      this.room(len);
      const o = this.out;
      for (let i = 0; i < len; i++, this.outLen++) o[this.outLen] = o[this.outLen - back]!;
    }
  }

  private dynamic(): void {
    const nlen = this.bits(5) + 257;
    const ndist = this.bits(5) + 1;
    const ncode = this.bits(4) + 4;
    if (nlen > 286 || ndist > 30) throw new Error('inflate: bad dynamic block counts');
    const lengths = new Uint8Array(320);
    for (let i = 0; i < ncode; i++) lengths[CODE_LENGTH_ORDER[i]!] = this.bits(3);
    const lencode = buildCode(lengths, 19);
    lengths.fill(0);
    for (let i = 0; i < nlen + ndist; ) {
      const sym = this.decode(lencode);
      if (sym < 16) {
        lengths[i++] = sym;
        continue;
      }
      let value = 0;
      let repeat: number;
      if (sym === 16) {
        if (i === 0) throw new Error('inflate: repeat with no first length');
        value = lengths[i - 1]!;
        repeat = 3 + this.bits(2);
      } else if (sym === 17) repeat = 3 + this.bits(3);
      else repeat = 11 + this.bits(7);
      if (i + repeat > nlen + ndist) throw new Error('inflate: too many lengths');
      while (repeat-- > 0) lengths[i++] = value;
    }
    if (lengths[256] === 0) throw new Error('inflate: no end-of-block code');
    this.codes(buildCode(lengths, nlen), buildCode(lengths.subarray(nlen), ndist));
  }

  /** inflate blocks up to the last one; returns where the input after it starts */
  run(tolerateEnd: boolean): number {
    try {
      let last = 0;
      while (!last) {
        last = this.bits(1);
        const type = this.bits(2);
        if (type === 0) this.stored();
        else if (type === 1) this.codes(fixedCodes().lit, fixedCodes().dist);
        else if (type === 2) this.dynamic();
        else throw new Error('inflate: invalid block type');
      }
    } catch (err) {
      if (!(err instanceof EndOfInput)) throw err;
      if (!tolerateEnd) throw new Error('inflate: unexpected end of input');
    }
    return this.pos;
  }

  result(): Buffer {
    return Buffer.from(this.out.buffer, 0, this.outLen);
  }
}

export function inflateRaw(data: Uint8Array, opts: InflateOptions = {}): Buffer {
  const inf = new Inflater(data, 0, opts.maxOutputLength ?? 2 ** 31);
  inf.run(opts.finishFlush === Z_SYNC_FLUSH);
  return inf.result();
}

/** the zlib wrapper: a 2-byte header (deflate, no preset dictionary), then raw deflate and an Adler-32 not checked here */
export function inflateZlib(data: Uint8Array, opts: InflateOptions = {}): Buffer {
  if (data.length < 2) throw new Error('inflate: unexpected end of input');
  const cmf = data[0]!;
  const flg = data[1]!;
  if ((cmf & 0x0f) !== 8 || ((cmf << 8) | flg) % 31 !== 0) throw new Error('inflate: incorrect header check');
  if (flg & 0x20) throw new Error('inflate: preset dictionary not supported');
  const inf = new Inflater(data, 2, opts.maxOutputLength ?? 2 ** 31);
  inf.run(opts.finishFlush === Z_SYNC_FLUSH);
  return inf.result();
}
