/**
 * Check findings of bounded size, whatever the image claims: a run of like findings (the same
 * series, consecutive indexes: clusters 5..9 with refcount 0 and one reference, L1 entries
 * 12..236028 past the end of the file) is one finding with a `count`, and past `MAX_FINDINGS`
 * distinct findings the rest are only counted, one summary finding per kind. A fuzzed image
 * with a large l1_size produced one finding per entry (236,017) before.
 */
import type { CheckFinding } from '../types.js';

export const MAX_FINDINGS = 1000;

type Kind = CheckFinding['kind'];
type Flags = Pick<CheckFinding, 'repaired' | 'wouldRepair' | 'notRepairable'>;

interface Series {
  f: CheckFinding;
  last: number;
  first: number;
}

export class FindingLog {
  readonly list: CheckFinding[] = [];
  private readonly open = new Map<string, Series>();
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
    this.totals.set(kind, (this.totals.get(kind) ?? 0) + 1);
    const key = `${kind}\u0000${series}`;
    const s = this.open.get(key);
    if (s && s.last === index - 1) {
      s.last = index;
      s.f.count = (s.f.count ?? 1) + 1;
      Object.assign(s.f, text(s.first, index));
      return;
    }
    if (this.list.length >= MAX_FINDINGS) {
      const o = this.overflow.get(kind);
      if (o) {
        o.count = (o.count ?? 1) + 1;
        o.message = `${o.count} more ${kind} findings not listed one by one`;
      } else {
        const f: CheckFinding = { kind, message: `1 more ${kind} finding not listed one by one`, count: 1, ...flagsOf(base) };
        this.overflow.set(kind, f);
      }
      return;
    }
    const f: CheckFinding = { kind, ...text(index, index), ...base };
    this.list.push(f);
    this.open.set(key, { f, first: index, last: index });
  }

  /** A one-off finding (not part of a run). */
  one(f: CheckFinding): void {
    this.add(f.kind, `one:${this.list.length}:${f.message}`, 0, () => ({ message: f.message, field: f.field }), f);
  }

  /** how many entries or clusters of `kind` were found (runs and unlisted ones counted in full) */
  total(kind: Kind, pick?: (f: CheckFinding) => boolean): number {
    if (!pick) return this.totals.get(kind) ?? 0;
    let n = 0;
    for (const f of this.all()) if (f.kind === kind && pick(f)) n += f.count ?? 1;
    return n;
  }

  all(): CheckFinding[] {
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
