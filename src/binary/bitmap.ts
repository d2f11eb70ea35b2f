/**
 * Sector bitmaps, one bit per sector. VHD numbers bits from the most significant bit of each
 * byte (`msb`), VHDX from the least significant (`lsb`); everything else is the same.
 */
export type BitOrder = 'msb' | 'lsb';

export class Bitmap {
  constructor(readonly order: BitOrder) {}

  private mask(s: number): number {
    return this.order === 'msb' ? 0x80 >> (s & 7) : 1 << (s & 7);
  }

  get(bm: Buffer, s: number): boolean {
    return (bm[s >> 3]! & this.mask(s)) !== 0;
  }

  /** set bits [s0, s1) */
  set(bm: Buffer, s0: number, s1: number): void {
    for (let s = s0; s < s1; s++) bm[s >> 3]! |= this.mask(s);
  }

  allSet(bm: Buffer, s0: number, s1: number): boolean {
    for (let s = s0; s < s1; s++) if (!this.get(bm, s)) return false;
    return true;
  }

  /** Runs of equal bits over [s0, s1): [from, to, set]. Whole bytes are skipped at once. */
  runs(bm: Buffer, s0: number, s1: number): [number, number, boolean][] {
    const out: [number, number, boolean][] = [];
    let s = s0;
    while (s < s1) {
      const v = this.get(bm, s);
      const whole = v ? 0xff : 0;
      let t = s + 1;
      while (t < s1) {
        if ((t & 7) === 0 && t + 8 <= s1 && bm[t >> 3] === whole) {
          t += 8;
          continue;
        }
        if (this.get(bm, t) !== v) break;
        t++;
      }
      out.push([s, t, v]);
      s = t;
    }
    return out;
  }
}
