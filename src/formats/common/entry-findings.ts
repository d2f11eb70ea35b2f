/**
 * Check findings about the entries of a block table (VHD BAT, VDI block map), one finding per
 * problem however many entries share it. A crafted or garbage table can hold millions of bad
 * entries; a finding per entry made `vdkit check` run out of memory (4.5 GB RSS on one VHD).
 *
 * Design notes
 * - One entry with a problem reads as before: its own message, field `TABLE[i]`, its offset.
 * - Several: one finding with the count, the first runs of entries (at most RUNS_SHOWN, then
 *   how many more), field `TABLE[first..last]`, the offset of the first; the message of the first
 *   entry is kept as the example. Memory per problem is constant.
 * - The caller keeps which entries to change (a typed array or the table itself) and marks the
 *   findings repaired with `findings()`' result, or passes the flags a problem's findings get
 *   (repaired, wouldRepair, notRepairable) with its first entry.
 */
import type { CheckFinding } from '../types.js';

const RUNS_SHOWN = 8;

export interface EntryTable {
  /** `BAT`, `blockMap` */
  name: string;
  struct: string;
  /** the file offset of entry i */
  offsetOf(i: number): number;
}

interface Group {
  kind: CheckFinding['kind'];
  /** what the entries share, for the summary ("name blocks past the end of the file") */
  problem: string;
  /** what a repair does to them, plural ("a repair marks them unused") */
  repair: string;
  count: number;
  first: number;
  last: number;
  /** the whole message for the first entry */
  example: string;
  runs: [number, number][];
  moreRuns: number;
  /** the current run is in `runs` */
  shown: boolean;
  flags?: Flags;
}

/** what a repair did (or would do) about every entry of a problem */
export type Flags = Pick<CheckFinding, 'repaired' | 'wouldRepair' | 'notRepairable'>;

export class EntryFindings {
  private readonly groups = new Map<string, Group>();

  constructor(private readonly table: EntryTable) {}

  /**
   * Entry `i` has problem `key` (entries must come in ascending order per key). `single` makes
   * the message when it is the first entry of the problem (only then called).
   */
  add(key: string, i: number, kind: CheckFinding['kind'], problem: string, repair: string, single: () => string, flags?: Flags): void {
    const g = this.groups.get(key);
    if (!g) {
      this.groups.set(key, { kind, problem, repair, count: 1, first: i, last: i, example: single(), runs: [[i, i]], moreRuns: 0, shown: true, flags });
      return;
    }
    g.count++;
    if (i !== g.last + 1) {
      // a new run: shown while there is room, else counted
      g.shown = g.runs.length < RUNS_SHOWN;
      if (g.shown) g.runs.push([i, i]);
      else g.moreRuns++;
    } else if (g.shown) g.runs[g.runs.length - 1]![1] = i;
    g.last = i;
  }

  get size(): number {
    return this.groups.size;
  }

  /** one finding per problem, in the order the problems were first seen */
  findings(): CheckFinding[] {
    const t = this.table;
    const out: CheckFinding[] = [];
    for (const g of this.groups.values()) {
      if (g.count === 1) {
        out.push({ kind: g.kind, message: g.example, struct: t.struct, field: `${t.name}[${g.first}]`, offset: t.offsetOf(g.first), ...g.flags });
        continue;
      }
      const runs = g.runs.map(([a, z]) => (a === z ? `${a}` : `${a}-${z}`)).join(', ');
      const more = g.moreRuns > 0 ? ` and ${g.moreRuns} more run${g.moreRuns === 1 ? '' : 's'}` : '';
      out.push({
        kind: g.kind,
        message: `${g.count} ${t.name} entries (${runs}${more}) ${g.problem}; ${g.repair} (the first: ${g.example})`,
        struct: t.struct,
        field: `${t.name}[${g.first}..${g.last}]`,
        offset: t.offsetOf(g.first),
        count: g.count,
        ...g.flags,
      });
    }
    return out;
  }
}
