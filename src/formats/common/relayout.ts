/**
 * The one relayout engine behind compact and defragment of every sparse format (issue 12 item
 * 4). A driver describes its allocation map as a `RelayoutMap`; the engine plans the moves
 * (relayout-plan.ts, pure) and runs them in the crash-safe order every format shares:
 *
 *   per batch: reserve the targets (qcow2 refcounts, a VHD footer moved past them) and flush;
 *   copy every item into space nothing references, flush; switch the table entries (one
 *   batched table write), flush; only then give the old places back (release), flush.
 *   (A map whose switch is a transaction that flushes by itself, VHDX's log commit, says so
 *   with `durableSwitch` and the engine adds no flush around it.)
 *
 * Until a switch is durable the old places are intact and still referenced, and the engine
 * never writes a unit while an entry names it, so a kill at any moment changes nothing a disk
 * reads and leaves at most leaked space. The file is cut only after the last batch. What
 * differs per format (qcow2 refcounts, the VHDX log, VMDK's redundant grain tables, VDI's block
 * count, VHD's footer) lives in the driver's map; each NOTES.md says which.
 */
import { DiskError } from '../../core/errors.js';
import type { InPlaceOptions } from '../types.js';
import type { ByteStore } from '../../storage/store.js';
import { planCloseUp, planCycles, planRelayout, type PlanBatch, type PlanItem, type RelayoutPlan } from './relayout-plan.js';

/** one stored entry as the engine sees it: where it is and how many units it owns */
export interface MapItem<E> extends PlanItem {
  entry: E;
}

/** one entry moving from unit `from` to unit `to` */
export interface UnitMove<E> {
  item: MapItem<E>;
  from: number;
  to: number;
}

/**
 * A sparse image's allocation map, for one compact or one defragment (a driver makes one per
 * run). Unit u is bytes [base + u * unit, base + (u + 1) * unit) of the file.
 */
export interface RelayoutMap<E> {
  /** the file, for errors */
  readonly path: string;
  /** bytes per unit */
  readonly unit: number;
  /** byte offset of unit 0 (VDI: the data area); default 0 */
  readonly base?: number;
  /** the first unit entries may occupy */
  readonly dataStart: number;
  /** targets lie on a grid of this many units from dataStart (default 1) */
  readonly align?: number;
  /** entries moved per batch (default 64) */
  readonly batch?: number;
  /** defragment: every entry's item in virtual (final) order; compact: in any order */
  entries(): Promise<MapItem<E>[]>;
  /**
   * Per unit, 1 where something stays or may not be a target: headers, tables, redundant copies,
   * metadata this run does not move, leaked space the format cannot hand out. Units past the
   * array are free.
   */
  fixed(): Promise<Uint8Array>;
  /** compact: the entries that may be dropped (default: entries()) */
  candidates?(): Promise<MapItem<E>[]>;
  /**
   * compact: whether the entry reads as all zeros (or holds nothing) and can be dropped;
   * `scratch` (item.len units, reused) is room to read it into
   */
  droppable?(item: MapItem<E>, scratch: Buffer): Promise<boolean>;
  /** compact: drop these entries (their table entries durable on return) */
  drop?(items: MapItem<E>[]): Promise<void>;
  /**
   * defragment, before the first move: make what the whole plan needs (qcow2: refcount blocks
   * for every target); true when that changed the fixed units, so the engine plans again
   */
  prepare?(plan: RelayoutPlan, items: MapItem<E>[]): Promise<boolean>;
  /**
   * make the targets usable before the copies (refcounts raised, the file extended); true when
   * it wrote something the engine must make durable before the copies
   */
  reserve?(moves: UnitMove<E>[]): Promise<boolean>;
  /** the bytes of an entry to copy (zeros past the end of the file; may be shorter than asked) */
  read(into: Buffer, at: number): Promise<Buffer>;
  write(data: Buffer, at: number): Promise<void>;
  flush(): Promise<void>;
  /** point the entries at their new places (one batched table write); the engine flushes after */
  setEntries(moves: UnitMove<E>[]): Promise<void>;
  /**
   * setEntries flushes the copies itself before the switch and returns with the switch durable
   * (VHDX: the log commit), so the engine adds no flush around it
   */
  readonly durableSwitch?: boolean;
  /** the old places are free (refcounts lowered); the engine flushes after */
  release?(moves: UnitMove<E>[]): Promise<void>;
  /** the last step: cut the file (`end`: first unit after everything the plan left in use) */
  cut(end: number): Promise<void>;
  /** a cancel between batches: leave the file usable (VDI: cut after the dense area) */
  stopped?(): Promise<void>;
}

/** The data moves of a map whose units live in one store, read and written as they are. */
export function storeMoves(store: ByteStore): Pick<RelayoutMap<unknown>, 'read' | 'write' | 'flush'> {
  return {
    async read(into, at) {
      await store.readInto(into, at);
      return into;
    },
    write: (data, at) => store.write(at, data),
    flush: () => store.flush(),
  };
}

export interface RelayoutResult {
  /** entries copied to a new place */
  moved: number;
  /** entries dropped by compact */
  dropped: number;
}

/** bytes copied per read/write group */
const COPY_GROUP_BYTES = 4 * 1024 * 1024;

function cancelled(map: RelayoutMap<unknown>, signal: AbortSignal): DiskError {
  return new DiskError('CANCELLED', undefined, { path: map.path }, { cause: signal.reason });
}

/**
 * Compact: entries that read as zeros dropped (in groups, durable), then the highest entries
 * moved into the lowest free units below them, then the file cut. Progress counts the entries
 * looked at.
 */
export async function compactMap<E>(map: RelayoutMap<E>, opts: InPlaceOptions = {}): Promise<RelayoutResult> {
  let dropped = 0;
  let total: number | undefined;
  if (map.droppable && map.drop) {
    const items = await (map.candidates ?? map.entries).call(map);
    total = items.length;
    opts.onProgress?.(0, total);
    const drops: MapItem<E>[] = [];
    let scratch = Buffer.alloc(0);
    for (let k = 0; k < items.length; ) {
      if (opts.signal?.aborted) throw cancelled(map, opts.signal);
      // read concurrently, up to 16 entries and about COPY_GROUP_BYTES at a time
      let bytes = 0;
      let j = k;
      while (j < items.length && j - k < 16 && (j === k || bytes + items[j]!.len * map.unit <= COPY_GROUP_BYTES)) bytes += items[j++]!.len * map.unit;
      if (scratch.length < bytes) scratch = Buffer.allocUnsafe(bytes);
      const group = items.slice(k, j);
      let off = 0;
      const zero = await Promise.all(
        group.map((it) => {
          const part = scratch.subarray(off, off + it.len * map.unit);
          off += part.length;
          return map.droppable!(it, part);
        }),
      );
      group.forEach((it, x) => zero[x] && drops.push(it));
      k = j;
      opts.onProgress?.(k, total);
    }
    if (drops.length > 0) await map.drop(drops);
    dropped = drops.length;
  }
  const items = await map.entries();
  const plan = planCloseUp(items, await map.fixed(), map.dataStart, map.batch ?? 64, map.align ?? 1);
  const moved = await runBatches(map, items, plan.batches, opts, undefined);
  await map.cut(plan.finalEnd);
  total ??= items.length;
  opts.onProgress?.(total, total);
  return { moved, dropped };
}

export interface DefragmentStrategy {
  /**
   * 'window' (default): planRelayout, items evicted to the spare area past the final layout;
   * 'cycles': a dense area of one-unit items permuted in place with one scratch unit (VDI)
   */
  plan?: 'window' | 'cycles';
}

/** Defragment: every entry at its place in virtual order from dataStart, then the file cut. */
export async function defragmentMap<E>(map: RelayoutMap<E>, opts: InPlaceOptions = {}, how: DefragmentStrategy = {}): Promise<RelayoutResult> {
  const items = await map.entries();
  const total = items.length;
  opts.onProgress?.(0, total);
  let plan: RelayoutPlan | undefined;
  for (let attempt = 0; !plan; attempt++) {
    const p = how.plan === 'cycles' ? planCycles(items, map.dataStart) : planRelayout(items, await map.fixed(), map.dataStart, map.batch ?? 64, map.align ?? 1);
    if (!map.prepare || !(await map.prepare(p, items))) plan = p;
    else if (attempt >= 64) throw new DiskError('INTERNAL', 'defragment: what the moves need keeps changing the plan', { path: map.path });
  }
  const moved = await runBatches(map, items, plan.batches, opts, total);
  await map.cut(plan.finalEnd);
  opts.onProgress?.(total, total);
  return { moved, dropped: 0 };
}

/** The batches in the crash-safe order (see the top of this file). */
async function runBatches<E>(map: RelayoutMap<E>, items: MapItem<E>[], batches: PlanBatch[], opts: InPlaceOptions, total: number | undefined): Promise<number> {
  let moved = 0;
  let buf = Buffer.alloc(0);
  for (const b of batches) {
    if (opts.signal?.aborted && !b.noStopBefore) {
      await map.stopped?.();
      throw cancelled(map, opts.signal);
    }
    const moves: UnitMove<E>[] = b.moves.map((m) => ({ item: items[m.item]!, from: m.from, to: m.to }));
    if (map.reserve && (await map.reserve(moves))) await map.flush();
    // the copies, in groups read and written concurrently
    for (let k = 0; k < moves.length; ) {
      let bytes = 0;
      let j = k;
      while (j < moves.length && (j === k || bytes + moves[j]!.item.len * map.unit <= COPY_GROUP_BYTES)) bytes += moves[j++]!.item.len * map.unit;
      if (buf.length < bytes) buf = Buffer.allocUnsafe(bytes);
      const group = moves.slice(k, j);
      let off = 0;
      const parts = group.map((m) => {
        const part = buf.subarray(off, off + m.item.len * map.unit);
        off += part.length;
        return part;
      });
      const base = map.base ?? 0;
      const data = await Promise.all(group.map((m, x) => map.read(parts[x]!, base + m.from * map.unit)));
      await Promise.all(group.map((m, x) => map.write(data[x]!, base + m.to * map.unit)));
      k = j;
    }
    if (!map.durableSwitch) await map.flush();
    await map.setEntries(moves);
    if (!map.durableSwitch) await map.flush();
    for (const m of moves) m.item.at = m.to;
    if (map.release) {
      await map.release(moves);
      await map.flush();
    }
    moved += moves.length;
    if (total !== undefined) opts.onProgress?.(b.placed, total);
  }
  return moved;
}
