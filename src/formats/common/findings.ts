/**
 * Check findings of bounded size, whatever an image claims: a crafted or garbage table can hold
 * millions of bad entries, and a finding per entry made `vdkit check` run out of memory (4.5 GB
 * RSS on one VHD; 236,017 findings on a qcow2 with a large l1_size). Two ways to aggregate, one
 * per kind of checker:
 *
 * - EntryFindings (VHD BAT, VDI block map, VMDK grain tables): one finding per *problem* of a
 *   table, however many entries share it and wherever they lie, with a count and the first runs
 *   of entries. The repair acts per problem ("a repair marks them unused").
 * - FindingLog (qcow2): one finding per *run* of like findings at consecutive indexes (clusters
 *   5..9 with refcount 0), past MAX_FINDINGS distinct findings only counted per kind. qcow2's
 *   checker reports many unrelated series (refcounts, L1/L2 entries, overlaps) whose runs are
 *   the useful unit, and derives leakedBytes from the counts.
 *
 * They stay two classes because their groupings differ (by problem vs by run) and the messages
 * users and tests read follow them; they share this module, the flags and the span helpers.
 */
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { CheckFinding, CheckOptions, CheckReport } from '../types.js';

/**
 * Driver.checkFile for a format whose checker works on the bytes alone: the file is opened
 * read-write only for a repair that is not a dry run, and closed whatever the check does.
 */
export async function checkFileWith(ns: Namespace, path: string, opts: CheckOptions, check: (store: ByteStore, path: string, opts: CheckOptions) => Promise<CheckReport>): Promise<CheckReport> {
  const store = await ns.open(path, { write: opts.repair && !opts.dryRun });
  try {
    return await check(store, path, opts);
  } finally {
    await store.close();
  }
}

/** what a repair did (or would do) about the entries of a finding */
export type Flags = Pick<CheckFinding, 'repaired' | 'wouldRepair' | 'notRepairable'>;

// ------------------------------------------------------------------ per problem (EntryFindings)

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

/**
 * One finding per problem of a table.
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

// ------------------------------------------------------------------ per run (FindingLog)

export const MAX_FINDINGS = 1000;

type Kind = CheckFinding['kind'];

interface Series {
  f: CheckFinding;
  last: number;
  first: number;
  /** the message of a run grown since it was last written (written when the findings are read) */
  text?: (first: number, last: number) => { message: string; field?: string };
}

export class FindingLog {
  private readonly items: CheckFinding[] = [];
  private readonly open = new Map<string, Series>();
  /** runs whose message is behind their length */
  private readonly stale = new Set<Series>();
  /** the overflow findings' counts changed since their messages were written */
  private staleOverflow = false;
  private readonly overflow = new Map<Kind, CheckFinding>();
  /** entries or clusters per kind, runs counted in full */
  private readonly totals = new Map<Kind, number>();

  /**
   * One finding at `index` of `series` (a key naming what is alike: kind, template, values).
   * `text(first, last)` writes the message and field for a run (first === last: one entry).
   */
  add(
    kind: Kind,
    series: string,
    index: number,
    text: (first: number, last: number) => { message: string; field?: string },
    base: { struct?: string; offset?: number } & Flags = {},
  ): void {
    if (this.extend(kind, series, index)) return;
    this.totals.set(kind, (this.totals.get(kind) ?? 0) + 1);
    const key = this.keyOf(kind, series);
    if (this.items.length >= MAX_FINDINGS) {
      const o = this.overflow.get(kind);
      if (o) {
        o.count = (o.count ?? 1) + 1;
        this.staleOverflow = true;
      } else {
        const f: CheckFinding = { kind, message: `1 more ${kind} finding not listed one by one`, count: 1, ...flagsOf(base) };
        this.overflow.set(kind, f);
      }
      return;
    }
    const f: CheckFinding = { kind, ...text(index, index), ...base };
    this.items.push(f);
    this.open.set(key, { f, first: index, last: index, text });
  }

  /**
   * Count entry `index` of `series` without any message work when it continues the series' open
   * run, or when the list is full and the kind already has its overflow finding; false when
   * `add` must be called. A damaged table can add hundreds of thousands of entries, so the
   * caller asks this before it builds add's arguments (found by the fuzzer: a qcow2 l1_size
   * raised to 16383 had check walk tables of garbage at 3 s a case).
   */
  extend(kind: Kind, series: string, index: number): boolean {
    const s = this.open.get(this.keyOf(kind, series));
    if (s && s.last === index - 1) {
      s.last = index;
      s.f.count = (s.f.count ?? 1) + 1;
      this.stale.add(s);
    } else {
      const o = this.items.length >= MAX_FINDINGS ? this.overflow.get(kind) : undefined;
      if (!o) return false;
      o.count = (o.count ?? 1) + 1;
      this.staleOverflow = true;
    }
    this.totals.set(kind, (this.totals.get(kind) ?? 0) + 1);
    return true;
  }

  /** kind + series as one key, made once per pair (a run of 100,000s of entries asks each time) */
  private readonly keys = new Map<Kind, Map<string, string>>();
  private keyOf(kind: Kind, series: string): string {
    let m = this.keys.get(kind);
    if (!m) this.keys.set(kind, (m = new Map()));
    let k = m.get(series);
    if (k !== undefined) return k;
    k = `${kind}\u0000${series}`;
    // one-off findings have a series each: past a bound the memo would only grow
    if (m.size < MAX_FINDINGS) m.set(series, k);
    return k;
  }

  /** A one-off finding (not part of a run). */
  one(f: CheckFinding): void {
    this.add(f.kind, `one:${this.items.length}:${f.message}`, 0, () => ({ message: f.message, field: f.field }), f);
  }

  /** how many entries or clusters of `kind` were found (runs and unlisted ones counted in full) */
  total(kind: Kind, pick?: (f: CheckFinding) => boolean): number {
    if (!pick) return this.totals.get(kind) ?? 0;
    let n = 0;
    for (const f of this.all()) if (f.kind === kind && pick(f)) n += f.count ?? 1;
    return n;
  }

  /** the findings listed one by one (runs as one each) */
  get list(): CheckFinding[] {
    for (const s of this.stale) Object.assign(s.f, s.text!(s.first, s.last));
    this.stale.clear();
    return this.items;
  }

  all(): CheckFinding[] {
    if (this.staleOverflow) {
      for (const [kind, o] of this.overflow) o.message = `${o.count} more ${kind} finding${o.count === 1 ? '' : 's'} not listed one by one`;
      this.staleOverflow = false;
    }
    return [...this.list, ...this.overflow.values()];
  }
}

function flagsOf(b: Flags): Flags {
  const out: Flags = {};
  if (b.repaired) out.repaired = true;
  if (b.wouldRepair) out.wouldRepair = true;
  if (b.notRepairable) out.notRepairable = true;
  return out;
}

/** "cluster 5" or "clusters 5..9" */
export const span = (noun: string, first: number, last: number): string => (first === last ? `${noun} ${first}` : `${noun}s ${first}..${last}`);
/** "refcount[5]" or "refcount[5..9]" */
export const fieldSpan = (name: string, first: number, last: number): string => (first === last ? `${name}[${first}]` : `${name}[${first}..${last}]`);
