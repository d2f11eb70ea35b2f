/**
 * The move plan of an in-place defragment (VHDX payload and sector bitmap blocks, qcow2 data
 * clusters), computed in memory before anything is written.
 *
 * Design notes
 * - The file is seen as a row of equal units (VHDX: 1 MiB, every block offset is a multiple of
 *   it; qcow2: one cluster). Each item (a block, a cluster) spans `len` units and must end up at
 *   its target: items back to back in their final (virtual) order from `start` on, skipping
 *   units that are fixed (metadata that stays where it is: qcow2 L2 tables and refcount blocks,
 *   compressed clusters; VHDX structures).
 * - The plan is a list of batches. Within a batch no destination overlaps anything in use when
 *   the batch starts (an item's current place, a fixed unit, another destination of the batch),
 *   so the driver can copy every item of a batch, make the copies durable, then switch the table
 *   entries: until the switch commits, the old places are intact and still referenced. Sources
 *   become free only after their batch (the driver reuses them no earlier than that).
 * - Window by window (as the VMDK defragment, sparse.ts): the items occupying the next `batch`
 *   targets that do not belong there are moved out of the way first — straight to their own
 *   target when it is free (a final move), else to the lowest free run at or past the end of the
 *   final layout (the spare area) — then the window's items are moved to their targets. An
 *   item already at its target never moves again.
 * - Pure: no I/O, so the drivers can check the whole plan first (qcow2 needs refcount blocks for
 *   every destination before the first move) and unit tests can replay it.
 */
import { DiskError } from '../../core/errors.js';

export interface PlanItem {
  /** first unit the item occupies now */
  at: number;
  /** units it spans (>= 1) */
  len: number;
}

export interface PlanMove {
  /** index into the items */
  item: number;
  from: number;
  to: number;
}

export interface PlanBatch {
  moves: PlanMove[];
  /** items (in final order) sitting at their targets for good once this batch is done */
  placed: number;
}

export interface RelayoutPlan {
  batches: PlanBatch[];
  /** target unit of each item */
  targets: number[];
  /** first unit after the last target */
  finalEnd: number;
}

const FREE = -1;
const FIXED = -2;
const RESERVED = -3;

/**
 * Plan the moves that put `items` (given in their final order) back to back from unit `start`,
 * skipping units for which `fixed` is 1, with at most about `batch` items per window.
 */
export function planRelayout(items: readonly PlanItem[], fixed: Uint8Array, start: number, batch: number): RelayoutPlan {
  const n = items.length;
  const isFixed = (u: number) => u < fixed.length && fixed[u] === 1;
  const targets: number[] = new Array<number>(n);
  let pos = start;
  let total = 0;
  let maxEnd = fixed.length;
  for (let i = 0; i < n; i++) {
    const len = items[i]!.len;
    total += len;
    maxEnd = Math.max(maxEnd, items[i]!.at + len);
    for (;;) {
      let clash = -1;
      for (let u = pos; u < pos + len; u++) if (isFixed(u)) clash = u;
      if (clash < 0) break;
      pos = clash + 1;
    }
    targets[i] = pos;
    pos += len;
  }
  const finalEnd = pos;
  let owner = new Int32Array(Math.max(maxEnd, finalEnd) + total + 2).fill(FREE);
  const grow = (u: number) => {
    if (u < owner.length) return;
    const next = new Int32Array(Math.max(u + 1, owner.length * 2)).fill(FREE);
    next.set(owner);
    owner = next;
  };
  for (let u = 0; u < fixed.length; u++) if (fixed[u] === 1) owner[u] = FIXED;
  const at = items.map((x) => x.at);
  const lenOf = (i: number) => items[i]!.len;
  for (let i = 0; i < n; i++) {
    for (let u = at[i]!; u < at[i]! + lenOf(i); u++) {
      if (owner[u] !== FREE) throw new DiskError('INTERNAL', `relayout plan: item ${i} overlaps ${owner[u] === FIXED ? 'a fixed unit' : `item ${owner[u]}`} at unit ${u}`);
      owner[u] = i;
    }
  }
  const freeRun = (a: number, len: number): boolean => {
    grow(a + len);
    for (let u = a; u < a + len; u++) if (owner[u] !== FREE) return false;
    return true;
  };
  const setRun = (a: number, len: number, v: number) => {
    grow(a + len);
    owner.fill(v, a, a + len);
  };
  let spareFrom = finalEnd;
  const spare = (len: number): number => {
    for (grow(spareFrom); owner[spareFrom] !== FREE; grow(spareFrom)) spareFrom++;
    for (let u = spareFrom; ; u++) if (freeRun(u, len)) return u;
  };
  const batches: PlanBatch[] = [];
  const apply = (moves: PlanMove[], placed: number) => {
    for (const m of moves) {
      setRun(m.from, lenOf(m.item), FREE);
      if (m.from >= finalEnd) spareFrom = Math.min(spareFrom, m.from);
    }
    for (const m of moves) {
      setRun(m.to, lenOf(m.item), m.item);
      at[m.item] = m.to;
    }
    batches.push({ moves, placed });
  };
  const reserve = (item: number, to: number): PlanMove => {
    setRun(to, lenOf(item), RESERVED);
    return { item, from: at[item]!, to };
  };
  for (let k = 0; k < n; k += batch) {
    const end = Math.min(n, k + batch);
    // out of the way: whatever sits on the window's targets and does not belong there
    const evict: PlanMove[] = [];
    const seen = new Set<number>();
    for (let j = k; j < end; j++) {
      for (let u = targets[j]!; u < targets[j]! + lenOf(j); u++) {
        const o = owner[u]!;
        if (o < 0 || seen.has(o)) continue;
        if (o === j && at[j] === targets[j]) continue;
        seen.add(o);
        const t = targets[o]!;
        evict.push(reserve(o, freeRun(t, lenOf(o)) ? t : spare(lenOf(o))));
      }
    }
    if (evict.length > 0) apply(evict, k);
    const place: PlanMove[] = [];
    for (let j = k; j < end; j++) {
      if (at[j] === targets[j]) continue;
      if (!freeRun(targets[j]!, lenOf(j))) throw new DiskError('INTERNAL', `relayout plan: target of item ${j} is not free after the window was cleared`);
      place.push(reserve(j, targets[j]!));
    }
    if (place.length > 0) apply(place, end);
    else if (batches.length > 0) batches[batches.length - 1]!.placed = end;
  }
  return { batches, targets, finalEnd };
}
