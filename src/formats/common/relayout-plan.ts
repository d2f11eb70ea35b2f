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
 * - Window by window: the items occupying the next `batch` targets that do not belong there
 *   are moved out of the way first — straight to their own target when it is free (a final
 *   move), else to the lowest free run at or past the end of the final layout (the spare
 *   area) — then the window's items are moved to their targets; then every later item whose
 *   target the window's moves uncovered follows at once, and so on (a cycle walk). An item
 *   already at its target never moves again.
 * - Pure: no I/O, so the drivers can check the whole plan first (qcow2 needs refcount blocks for
 *   every destination before the first move) and unit tests can replay it.
 */
import { DiskError } from '../../core/errors.js';

export interface PlanItem {
  /** first unit the item occupies now */
  at: number;
  /** units it spans (>= 1) */
  len: number;
  /** moves in a batch of its own (a qcow2 L2 table: the entry writes of its data must not race its copy) */
  solo?: boolean;
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
  /** a stop before this batch would leave more than a leak (VDI: inside a permutation cycle) */
  noStopBefore?: boolean;
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
 * skipping units for which `fixed` is 1, with at most about `batch` items per window. Targets
 * (and places in the spare area) lie on a grid of `align` units from `start` (VMDK: grains
 * counted in sectors land grain-aligned).
 */
export function planRelayout(items: readonly PlanItem[], fixed: Uint8Array, start: number, batch: number, align = 1): RelayoutPlan {
  const n = items.length;
  const isFixed = (u: number) => u < fixed.length && fixed[u] === 1;
  const up = (u: number) => (u <= start ? start : start + Math.ceil((u - start) / align) * align);
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
      pos = up(clash + 1);
    }
    targets[i] = pos;
    pos = up(pos + len);
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
    for (let u = up(spareFrom); ; u += align) if (freeRun(u, len)) return u;
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
    // the places the window's moves left may uncover later items' targets: those items go
    // there at once, and so on (on a grid this walks a permutation cycle, so fewer items are
    // parked in the spare area and fewer move twice)
    let left = [...evict, ...place];
    while (left.length > 0) {
      const chase: PlanMove[] = [];
      for (const m of left) {
        const a = m.from;
        const z = m.from + lenOf(m.item);
        // first item whose target ends after a (targets ascend and do not overlap)
        let i = end;
        for (let hi = n; i < hi; ) {
          const mid = (i + hi) >> 1;
          if (targets[mid]! + lenOf(mid) <= a) i = mid + 1;
          else hi = mid;
        }
        for (; i < n && targets[i]! < z && chase.length < batch; i++) {
          if (at[i] === targets[i] || !freeRun(targets[i]!, lenOf(i))) continue;
          chase.push(reserve(i, targets[i]!));
        }
      }
      if (chase.length === 0) break;
      apply(chase, end);
      left = chase;
    }
  }
  return { batches, targets, finalEnd };
}

/**
 * The moves of a close-up (compact): from the highest item down, each item to the lowest free
 * run of units below it (on the `align` grid from `start`), at most `batch` moves per batch;
 * an item marked `solo` moves in a batch of its own. Items that find no room below them stay.
 * Sources are never targets: a target always lies below every item still to be looked at.
 */
export function planCloseUp(items: readonly PlanItem[], fixed: Uint8Array, start: number, batch: number, align = 1): RelayoutPlan {
  const up = (u: number) => (u <= start ? start : start + Math.ceil((u - start) / align) * align);
  let size = fixed.length;
  for (const it of items) size = Math.max(size, it.at + it.len);
  const owner = new Int32Array(size + 1).fill(FREE);
  for (let u = 0; u < fixed.length; u++) if (fixed[u] === 1) owner[u] = FIXED;
  items.forEach((it, i) => {
    for (let u = it.at; u < it.at + it.len; u++) {
      if (owner[u] !== FREE) throw new DiskError('INTERNAL', `relayout plan: item ${i} overlaps ${owner[u] === FIXED ? 'a fixed unit' : `item ${owner[u]}`} at unit ${u}`);
      owner[u] = i;
    }
  });
  const targets = items.map((x) => x.at);
  const order = items.map((_, i) => i).sort((a, b) => items[b]!.at - items[a]!.at);
  let low = start;
  let failLen = Infinity;
  const runBelow = (len: number, below: number): number => {
    while (low < size && owner[low] !== FREE) low++;
    for (let u = up(low); u + len <= below; ) {
      let clash = -1;
      for (let x = u + len - 1; x >= u; x--) {
        if (owner[x] !== FREE) {
          clash = x;
          break;
        }
      }
      if (clash < 0) return u;
      u = up(clash + 1);
    }
    return -1;
  };
  const batches: PlanBatch[] = [];
  let cur: PlanMove[] = [];
  let placed = 0;
  const close = () => {
    if (cur.length === 0) return;
    placed += cur.length;
    batches.push({ moves: cur, placed });
    cur = [];
  };
  for (const i of order) {
    const it = items[i]!;
    if (it.len >= failLen) continue;
    const to = runBelow(it.len, it.at);
    if (to < 0) {
      failLen = it.len;
      continue;
    }
    owner.fill(RESERVED, to, to + it.len);
    if (it.solo) close();
    cur.push({ item: i, from: it.at, to });
    targets[i] = to;
    if (it.solo || cur.length >= batch) close();
  }
  close();
  let finalEnd = start;
  for (let u = owner.length - 1; u >= 0; u--) {
    if (owner[u] === FIXED || owner[u] === RESERVED || (owner[u]! >= 0 && targets[owner[u]!] === items[owner[u]!]!.at)) {
      finalEnd = Math.max(start, u + 1);
      break;
    }
  }
  return { batches, targets, finalEnd };
}

/**
 * The moves that put `items` of one unit each, which fill units start .. start+n-1 between
 * them, in their given order on the same units, with ONE scratch unit (start+n): each
 * permutation cycle's first occupant goes to the scratch unit, then every item into the unit
 * it belongs in, which empties the one it came from, the scratch copy last. One move per
 * batch; inside a cycle a stop would leave the scratch unit in use and a hole below it, so only
 * the batch that starts a cycle may be preceded by a stop (VDI: the data area stays dense and
 * its block count never changes).
 */
export function planCycles(items: readonly PlanItem[], start: number): RelayoutPlan {
  const n = items.length;
  const at = items.map((x) => x.at);
  const owner = new Int32Array(n).fill(FREE);
  items.forEach((it, i) => {
    const s = it.at - start;
    if (it.len !== 1 || s < 0 || s >= n || owner[s] !== FREE) throw new DiskError('INTERNAL', `relayout plan: item ${i} is not one unit of a dense area (at unit ${it.at})`);
    owner[s] = i;
  });
  const scratch = start + n;
  const batches: PlanBatch[] = [];
  for (let s = 0; s < n; s++) {
    if (owner[s] === s) continue;
    const first = owner[s]!;
    batches.push({ moves: [{ item: first, from: at[first]!, to: scratch }], placed: s });
    at[first] = scratch;
    for (let hole = s; ; ) {
      const v = hole;
      const from = at[v]!;
      batches.push({ moves: [{ item: v, from, to: start + hole }], placed: v === first ? s + 1 : s, noStopBefore: true });
      at[v] = start + hole;
      owner[hole] = v;
      if (v === first) break;
      hole = from - start;
    }
  }
  return { batches, targets: items.map((_, i) => start + i), finalEnd: start + n };
}
