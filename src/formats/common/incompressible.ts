/**
 * A cheap guess whether a block is worth compressing, for the compression workers: already
 * compressed or encrypted content costs zlib as much time as anything else and gains nothing.
 */
import { deflateSync } from '../../core/platform.js';

/** Shannon entropy of a byte sample, bits per byte (8 for uniform random data). */
function sampledEntropy(b: Buffer): number {
  const hist = new Uint32Array(256);
  let n = 0;
  for (let i = 0; i < b.length; i += 7) {
    hist[b[i]!]!++;
    n++;
  }
  let e = 0;
  for (let i = 0; i < 256; i++) {
    const c = hist[i]!;
    if (c > 0) {
      const p = c / n;
      e -= p * Math.log2(p);
    }
  }
  return e;
}

/**
 * True when the block's sampled bytes look random and its 8 KiB middle does not shrink by 3% at
 * zlib level 1: compressing it whole would not pay (a block that shrinks by less is stored).
 */
export function looksIncompressible(block: Buffer): boolean {
  if (sampledEntropy(block) < 7.8) return false;
  const mid = block.length >> 1;
  const sample = block.subarray(Math.max(0, mid - 4096), Math.min(block.length, mid + 4096));
  return deflateSync(sample, { level: 1 }).length >= sample.length * 0.97;
}
