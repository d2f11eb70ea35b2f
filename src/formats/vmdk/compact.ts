/**
 * Discard, compact and defragment of one hosted sparse extent (NOTES.md "Discard, compact,
 * defragment"), in place. Every grain move has the crash-safe order of moveGrains: copy the
 * grains to their new slots, flush; point the GT, then the redundant GT at them, flush; only
 * then are the old slots free for reuse or the final cut. Functions of a SparseState (map.ts);
 * SparseExtent (sparse.ts) calls them.
 */
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE, roundUp } from '../../core/ints.js';
import { isZero } from '../../binary/zeros.js';
import { readU32Array, u32Bytes } from '../../binary/tables.js';
import { GrainSpace, type SparseState } from './map.js';

/** grains moved per crash-safe step (2 flushes each): 64 grains = 4 MiB with the default grain */
const MOVE_BATCH = 64;

function checkAbort(signal: AbortSignal | undefined, path: string): void {
  if (signal?.aborted) throw new DiskError('CANCELLED', undefined, { path }, { cause: signal.reason });
}

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

/**
 * Compact: grains that read as zeros are dropped (GTE 0 in a base, GTE 1 in a child whose
 * header allows it; a version-1 child keeps them, since GTE 0 would show the parent), then
 * grains are moved from the end of the file into the free slots below them, and the file is
 * cut after the last one. Leaked slots (a killed write, a discard) are reclaimed the same way.
 * Crash order per batch of moves: copy the grains to their new slots, flush; point the GT,
 * then the redundant GT at them, flush; only then are the old slots free for reuse or the cut.
 */
export async function compactExtent(this: SparseState, opts: { hasParent: boolean; signal?: AbortSignal; onGrain?: () => void }): Promise<void> {
  const space = await beginRelayout.call(this, opts.signal);
  // 1. find grains that read as zeros and drop them (redundant table first: see setEntries)
  const dropTo = !opts.hasParent ? 0 : this.hasZeroMarker ? 1 : -1;
  const buf = Buffer.alloc(this.grainBytes * 16);
  const drops: { gi: number; value: number }[] = [];
  const bySector = space.grains.map((_, i) => i).sort((a, b) => space.sector[a]! - space.sector[b]!);
  for (let k = 0; k < bySector.length; k += 16) {
    checkAbort(opts.signal, this.path);
    const batch = bySector.slice(k, k + 16);
    await Promise.all(batch.map((i, j) => this.readFile(buf.subarray(j * this.grainBytes, (j + 1) * this.grainBytes), space.sector[i]! * SECTOR_SIZE)));
    for (let j = 0; j < batch.length; j++) {
      opts.onGrain?.();
      if (dropTo < 0) continue;
      const grain = buf.subarray(j * this.grainBytes, (j + 1) * this.grainBytes);
      if (isZero(grain)) drops.push({ gi: space.grains[batch[j]!]!, value: dropTo });
    }
  }
  if (drops.length > 0) {
    for (let k = 0; k < drops.length; k += 4096) await this.setEntries(drops.slice(k, k + 4096), true);
    await this.store.flush();
    const dropped = new Set(drops.map((d) => d.gi));
    for (let i = 0; i < space.grains.length; i++) if (dropped.has(space.grains[i]!)) space.release(i);
  }
  // 2. move grains down from the end into the lowest free slots
  const live = space.liveIndexes().sort((a, b) => space.sector[b]! - space.sector[a]!);
  let free = 0;
  let moves: { i: number; to: number }[] = [];
  for (const i of live) {
    while (!space.isFree(free)) free++;
    if (space.slotSector(free) >= space.sector[i]!) break;
    moves.push({ i, to: free });
    space.reserve(free);
    if (moves.length >= MOVE_BATCH) {
      await moveGrains.call(this, space, moves, opts.signal);
      moves = [];
    }
  }
  if (moves.length > 0) await moveGrains.call(this, space, moves, opts.signal);
  await cutAfterUse.call(this, space);
}

/**
 * Defragment: grains in virtual order from the first grain slot on (slots holding grain
 * tables allocated after the metadata area are skipped), so a sequential read of the disk is
 * a sequential read of the file. Window by window: grains sitting in the window's slots that
 * belong elsewhere are moved out of the way (to free slots past the final area, else to the
 * end of the file), then the window's grains are moved in. Every move has compact's crash
 * order; the file is cut after the last grain.
 */
export async function defragmentExtent(this: SparseState, opts: { signal?: AbortSignal; onGrain?: () => void }): Promise<void> {
  const space = await beginRelayout.call(this, opts.signal);
  const order = space.liveIndexes().sort((a, b) => space.grains[a]! - space.grains[b]!);
  const targets: number[] = [];
  for (let slot = 0; targets.length < order.length; slot++) if (!space.isFixed(slot)) targets.push(slot);
  const finalEnd = targets.length > 0 ? targets[targets.length - 1]! + 1 : 0;
  let spare = finalEnd;
  const spareSlot = () => {
    while (!space.isFree(spare)) spare++;
    return spare;
  };
  for (let k = 0; k < order.length; k += MOVE_BATCH) {
    checkAbort(opts.signal, this.path);
    const window = new Set<number>();
    for (let j = k; j < Math.min(k + MOVE_BATCH, order.length); j++) window.add(targets[j]!);
    // out of the way: whatever occupies a window slot and is not the grain that belongs there
    const evict: { i: number; to: number }[] = [];
    for (let j = k; j < Math.min(k + MOVE_BATCH, order.length); j++) {
      const t = targets[j]!;
      for (const i of space.occupants(t)) {
        if (i === order[j] && space.sector[i] === space.slotSector(t)) continue;
        if (evict.some((m) => m.i === i)) continue;
        const to = spareSlot();
        space.reserve(to);
        evict.push({ i, to });
      }
    }
    if (evict.length > 0) await moveGrains.call(this, space, evict, opts.signal);
    if (spare > finalEnd) spare = finalEnd; // evicted sources may have freed slots there
    const place: { i: number; to: number }[] = [];
    for (let j = k; j < Math.min(k + MOVE_BATCH, order.length); j++) {
      const i = order[j]!;
      const t = targets[j]!;
      if (space.sector[i] === space.slotSector(t)) continue;
      space.reserve(t);
      place.push({ i, to: t });
    }
    if (place.length > 0) await moveGrains.call(this, space, place, opts.signal);
    for (let j = k; j < Math.min(k + MOVE_BATCH, order.length); j++) opts.onGrain?.();
  }
  await cutAfterUse.call(this, space);
}

/**
 * Start of compact / defragment: the redundant tables are made equal to the primary ones
 * (a killed earlier run may have left a copy naming a slot the primary no longer uses, which
 * must not be handed to another grain), and the map of the grain area is built.
 */
async function beginRelayout(this: SparseState, signal?: AbortSignal): Promise<GrainSpace> {
  this.assertWritable();
  if (this.compressed) throw new DiskError('NOTSUPPORTED', 'compressed (streamOptimized) extents cannot be rearranged in place', { path: this.path, field: 'flags' });
  checkAbort(signal, this.path);
  this.gtCache.clear();
  const fileSectors = Math.ceil(this.fileSize / SECTOR_SIZE);
  const fixed: [number, number][] = [[0, this.overHeadSectors]];
  const gtSectors = this.gtBytes / SECTOR_SIZE;
  const gdSectors = Math.ceil((this.gd.length * 4) / SECTOR_SIZE);
  fixed.push([this.gdOffsetBytes / SECTOR_SIZE, this.gdOffsetBytes / SECTOR_SIZE + gdSectors]);
  if (this.rgd) fixed.push([this.rgdOffsetBytes / SECTOR_SIZE, this.rgdOffsetBytes / SECTOR_SIZE + gdSectors]);
  for (const dir of [this.gd, this.rgd]) if (dir) for (const e of dir) if (e !== 0) fixed.push([e, e + gtSectors]);
  const grains: number[] = [];
  const sectors: number[] = [];
  let synced = false;
  for (let g = 0; g < this.gd.length; g++) {
    const table = await this.gt(g);
    if (!table) continue;
    for (let i = 0; i < table.length; i++) {
      const gi = g * this.numGTEs + i;
      const e = this.checkedEntry(gi, table[i]!);
      if (e > 1) {
        grains.push(gi);
        sectors.push(e);
      }
    }
    if (this.rgd && this.rgd[g] !== 0) {
      const copy = await readU32Array(this.store, this.rgd[g]! * SECTOR_SIZE, this.numGTEs);
      if (!u32Bytes(copy, 0, copy.length).equals(u32Bytes(table, 0, table.length))) {
        await this.store.write(this.rgd[g]! * SECTOR_SIZE, u32Bytes(table, 0, table.length));
        synced = true;
      }
    }
  }
  if (synced) await this.store.flush();
  return new GrainSpace(this.path, this.overHeadSectors, this.grainSectors, fileSectors, fixed, grains, sectors);
}

/** Move a batch of grains to reserved free slots in the crash-safe order (see compact). */
async function moveGrains(this: SparseState, space: GrainSpace, moves: { i: number; to: number }[], signal?: AbortSignal): Promise<void> {
  checkAbort(signal, this.path);
  const gb = this.grainBytes;
  for (let k = 0; k < moves.length; k += 16) {
    const part = moves.slice(k, k + 16);
    const bufs = part.map(() => Buffer.allocUnsafe(gb));
    await Promise.all(part.map((m, j) => this.readFile(bufs[j]!, space.sector[m.i]! * SECTOR_SIZE)));
    await Promise.all(part.map((m, j) => this.store.write(space.slotSector(m.to) * SECTOR_SIZE, bufs[j]!)));
  }
  for (const m of moves) this.fileSize = Math.max(this.fileSize, (space.slotSector(m.to) + this.grainSectors) * SECTOR_SIZE);
  await this.store.flush();
  await this.setEntries(moves.map((m) => ({ gi: space.grains[m.i]!, value: space.slotSector(m.to) })));
  await this.store.flush();
  for (const m of moves) space.moved(m.i, m.to);
  this.nextFree = roundUp(this.fileSize, gb);
}

/** Cut the file after the last grain or table still in use (the moves are durable by now). */
async function cutAfterUse(this: SparseState, space: GrainSpace): Promise<void> {
  const end = space.usedEndSector() * SECTOR_SIZE;
  if (end < this.fileSize) {
    await this.store.flush();
    await this.store.truncate(end);
    this.fileSize = end;
  }
  this.nextFree = roundUp(this.fileSize, this.grainBytes);
  await this.store.flush();
}
