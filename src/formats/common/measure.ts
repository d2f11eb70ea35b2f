/** Counting helpers shared by the formats' measure layouts (formats/<fmt>/measure.ts). */
import type { UnitRun } from '../types.js';

/** units in all the runs */
export function unitCount(runs: readonly UnitRun[]): number {
  let n = 0;
  for (const r of runs) n += r.count;
  return n;
}

/**
 * How many groups of `perGroup` consecutive units the runs touch (qcow2 L2 tables, VMDK grain
 * tables): runs are sorted and disjoint, so a group shared by two runs is counted once.
 */
export function groupsTouched(runs: readonly UnitRun[], perGroup: number): number {
  let n = 0;
  let last = -1;
  for (const r of runs) {
    if (r.count <= 0) continue;
    const first = Math.floor(r.first / perGroup);
    const end = Math.floor((r.first + r.count - 1) / perGroup);
    n += end - Math.max(first, last + 1) + 1;
    last = end;
  }
  return n;
}
