/**
 * A deterministic raw image of mixed content for the benchmarks: runs of 4 KiB..2 MiB (whole
 * 4 KiB blocks, so both whole 64 KiB grains and partly filled grains occur), each run being
 * random data, explicitly written zeros, or a hole that is never written, about a third each.
 * With `compressible: true` there is a fourth kind, text-like data that deflate shrinks about
 * threefold, and the four kinds are a quarter each (the three-kind default is kept as it was, so
 * older figures stay comparable).
 * The layout comes from a seeded PRNG and the random bytes from an AES-128-CTR keystream keyed by
 * the seed, so the same seed gives the same file byte for byte (and it is fast: ~1 s per GiB).
 * The text comes from one pool of seeded pseudo-words (8 MiB), each run a slice of it at a seeded
 * offset: a 64 KiB grain never sees a repeat inside deflate's 32 KiB window that plain text would
 * not have, while making the text costs one pool, not one pass per byte of the image.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

import { mulberry32 } from '../test/helpers/prng.js';

export { mulberry32 };

export interface MixStats {
  runs: number;
  randomBytes: number;
  /** text-like data (only with `compressible: true`) */
  compressibleBytes: number;
  zeroBytes: number;
  holeBytes: number;
  /** 64 KiB grains holding some random or text data */
  dataGrains: number;
  /** of those, grains that also hold zeros or holes */
  partialGrains: number;
  /** grains of zeros and/or holes only */
  zeroGrains: number;
}

const BLOCK = 4096;
const GRAIN = 64 * 1024;
const RANDOM = 1;
const ZERO = 2;
const TEXT = 3;

export interface MixOptions {
  /** add text-like (compressible) runs as a fourth kind, a quarter of the runs */
  compressible?: boolean;
}

/** `size` bytes of lower-case pseudo-words, spaces, punctuation and newlines from `rnd` */
function textPool(size: number, rnd: () => number): Buffer {
  const words: Buffer[] = [];
  for (let i = 0; i < 2000; i++) {
    const len = 2 + Math.floor(rnd() * rnd() * 12);
    let w = '';
    for (let j = 0; j < len; j++) w += String.fromCharCode(97 + Math.floor(rnd() * rnd() * 26));
    words.push(Buffer.from(w));
  }
  const pool = Buffer.allocUnsafe(size);
  let at = 0;
  let col = 0;
  while (at < size) {
    // Zipf-like choice: a few words are frequent, as in text
    const w = words[Math.floor(words.length * rnd() * rnd() * rnd())]!;
    at += w.copy(pool, at);
    col += w.length + 1;
    const r = rnd();
    const sep = col > 72 ? 10 : r < 0.05 ? 44 : r < 0.08 ? 46 : 32;
    if (sep === 10) col = 0;
    if (at < size) pool[at++] = sep;
  }
  return pool;
}

export async function buildMixedRaw(path: string, size: number, seed: number, opts: MixOptions = {}): Promise<MixStats> {
  if (size % GRAIN !== 0) throw new Error('size must be a multiple of 64 KiB');
  const rnd = mulberry32(seed);
  const text = opts.compressible ? textPool(8 * 1024 * 1024, mulberry32(seed ^ 0x7e47)) : undefined;
  const nKinds = text ? 4 : 3;
  const key = createHash('sha256').update(`vdkit-bench-${seed}`).digest();
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  const maxRun = 2 * 1024 * 1024;
  const zeros = Buffer.alloc(maxRun);
  const blocks = size / BLOCK;
  const kinds = new Uint8Array(blocks); // 0 hole, 1 random, 2 zero, 3 text
  const stats: MixStats = { runs: 0, randomBytes: 0, compressibleBytes: 0, zeroBytes: 0, holeBytes: 0, dataGrains: 0, partialGrains: 0, zeroGrains: 0 };

  const fh = await open(path, 'w+');
  try {
    await fh.truncate(size);
    let b = 0;
    while (b < blocks) {
      // run length 2^k blocks, k uniform in 0..9 (4 KiB .. 2 MiB), not aligned to anything
      const len = Math.min(1 << Math.floor(rnd() * 10), blocks - b);
      const kind = Math.floor(rnd() * nKinds); // 0 hole, 1 random, 2 zero, 3 text
      const bytes = len * BLOCK;
      stats.runs++;
      if (kind === RANDOM) {
        const data = cipher.update(zeros.subarray(0, bytes));
        await fh.write(data, 0, bytes, b * BLOCK);
        stats.randomBytes += bytes;
      } else if (kind === TEXT) {
        const from = Math.floor(rnd() * (text!.length - bytes));
        await fh.write(text!, from, bytes, b * BLOCK);
        stats.compressibleBytes += bytes;
      } else if (kind === ZERO) {
        await fh.write(zeros, 0, bytes, b * BLOCK);
        stats.zeroBytes += bytes;
      } else stats.holeBytes += bytes;
      kinds.fill(kind, b, b + len);
      b += len;
    }
    // Settle the file on disk now, so its write-back does not land in the timed part.
    await fh.datasync();
  } finally {
    await fh.close();
  }

  const perGrain = GRAIN / BLOCK;
  for (let g = 0; g < blocks; g += perGrain) {
    let random = 0;
    for (let i = g; i < g + perGrain; i++) if (kinds[i] === RANDOM || kinds[i] === TEXT) random++;
    if (random === 0) stats.zeroGrains++;
    else {
      stats.dataGrains++;
      if (random < perGrain) stats.partialGrains++;
    }
  }
  return stats;
}
