/**
 * Discard, compact and defragment of one hosted sparse extent (NOTES.md "Discard, compact,
 * defragment"), in place. Compact and defragment are the relayout engine's
 * (common/relayout.ts) over the extent's map (map.ts vmdkRelayout): every batch of grain moves
 * copies the grains to their new slots, flush; points the GT, then the redundant GT at them,
 * flush; only then are the old slots free for reuse or the final cut. Functions of a
 * SparseState (map.ts); SparseExtent (sparse.ts) calls them.
 */
import { DiskError } from '../../core/errors.js';
import type { InPlaceOptions } from '../types.js';
import { compactMap, defragmentMap } from '../common/relayout.js';
import { vmdkRelayout, type SparseState } from './map.js';

/**
 * Mark [offset, offset+length) of this extent unused. `limit` is where the extent's virtual
 * range ends (its extent line): a grain reaching it counts as whole. Whole grains: GTE 0 in a
 * base; in a child GTE 1 where the header allows it, else zeros are written (a v1 child has
 * no other way to hide its parent). Parts of grains: zeros written where the grain is
 * allocated; a part of a child's unallocated grain needs the parent's bytes around it, so the
 * caller must write those zeros through the chain.
 */
export async function discardExtent(this: SparseState, offset: number, length: number, opts: { hasParent: boolean; limit: number }): Promise<void> {
  this.assertWritable();
  const gb = this.grainBytes;
  const frees: { gi: number; value: number }[] = [];
  const zeroWrites: { at: number; n: number }[] = [];
  const end = offset + length;
  for (let pos = offset; pos < end; ) {
    const gi = Math.floor(pos / gb);
    const within = pos - gi * gb;
    const n = Math.min(gb - within, end - pos);
    const whole = within === 0 && pos + n >= Math.min((gi + 1) * gb, opts.limit);
    const e = await this.gte(gi);
    if (whole) {
      if (!opts.hasParent) {
        if (e !== 0) frees.push({ gi, value: 0 });
      } else if (this.hasZeroMarker) {
        if (e !== 1) frees.push({ gi, value: 1 });
      } else zeroWrites.push({ at: pos, n });
    } else if (e > 1) {
      zeroWrites.push({ at: pos, n });
    } else if (e === 0 && opts.hasParent) {
      throw new DiskError('INVAL', 'part of a grain a child does not hold yet: discard it through the chain (the rest of the grain comes from the parent)', { path: this.path, field: `GTE[${gi}]`, offset: pos });
    }
    pos += n;
  }
  if (frees.length > 0) await this.setEntries(frees, true);
  const zeros = Buffer.alloc(gb);
  for (const z of zeroWrites) await this.write(zeros.subarray(0, z.n), z.at);
}

/** Number of grains holding data (for progress totals). */
export async function dataGrainCount(this: SparseState): Promise<number> {
  let n = 0;
  for (let g = 0; g < this.gd.length; g++) {
    const table = await this.gt(g);
    if (table) for (let i = 0; i < table.length; i++) if (table[i]! > 1) n++;
  }
  return n;
}

/** engine progress (done, total) as one onGrain call per grain */
function perGrain(onGrain: (() => void) | undefined): NonNullable<InPlaceOptions['onProgress']> {
  let told = 0;
  return (done) => {
    for (; told < done; told++) onGrain?.();
  };
}

/**
 * Compact: grains that read as zeros are dropped (GTE 0 in a base, GTE 1 in a child whose
 * header allows it; a version-1 child keeps them, since GTE 0 would show the parent), then
 * grains are moved from the end of the file into the free slots below them, and the file is
 * cut after the last one. Leaked slots (a killed write, a discard) are reclaimed the same way.
 */
export async function compactExtent(this: SparseState, opts: { hasParent: boolean; signal?: AbortSignal; onGrain?: () => void }): Promise<number> {
  const map = vmdkRelayout(this, !opts.hasParent ? 0 : this.hasZeroMarker ? 1 : undefined);
  if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: this.path }, { cause: opts.signal.reason });
  return (await compactMap(map, { signal: opts.signal, onProgress: perGrain(opts.onGrain) })).moved;
}

/**
 * Defragment: grains in virtual order from the first grain slot on (slots holding grain
 * tables allocated after the metadata area are skipped), so a sequential read of the disk is
 * a sequential read of the file. The engine's window plan: grains sitting in the window's
 * slots that belong elsewhere are moved out of the way (to their own slot when free, else past
 * the final area), then the window's grains are moved in. The file is cut after the last grain.
 */
export async function defragmentExtent(this: SparseState, opts: { signal?: AbortSignal; onGrain?: () => void }): Promise<number> {
  const map = vmdkRelayout(this);
  if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: this.path }, { cause: opts.signal.reason });
  return (await defragmentMap(map, { signal: opts.signal, onProgress: perGrain(opts.onGrain) })).moved;
}
