/** Layout findings every table shares: entries past the disk end, and entries that overlap. */
import { warning, type InsideWarning, type Partition } from '../types.js';

/**
 * Warnings for `parts` on a disk of `capacity` bytes. An extended partition holds its logicals
 * by design, so it is left out of the overlap test (its logicals are checked against it instead).
 */
export function layoutWarnings(parts: readonly Partition[], capacity: number, struct: string, fieldOf: (p: Partition, end: boolean) => string): InsideWarning[] {
  const out: InsideWarning[] = [];
  for (const p of parts) {
    if (p.offset + p.length > capacity) {
      out.push(warning(`partition ${p.number} ends at byte ${p.offset + p.length}, past the disk end (${capacity})`, struct, fieldOf(p, true)));
    }
  }
  const extended = parts.find((p) => p.kind === 'extended');
  if (extended) {
    for (const p of parts) {
      if (p.kind === 'logical' && (p.offset < extended.offset || p.offset + p.length > extended.offset + extended.length)) {
        out.push(warning(`logical partition ${p.number} lies outside the extended partition ${extended.number}`, 'EBR', 'entry[0]'));
      }
    }
  }
  const data = parts.filter((p) => p.kind !== 'extended' && p.length > 0).sort((a, b) => a.offset - b.offset || a.number - b.number);
  // one pass over the sorted list with the entry reaching furthest: O(n log n), every overlap with it reported
  let reach: Partition | undefined;
  for (const p of data) {
    if (reach && p.offset < reach.offset + reach.length) out.push(warning(`partitions ${reach.number} and ${p.number} overlap`, struct, fieldOf(p, false)));
    if (!reach || p.offset + p.length > reach.offset + reach.length) reach = p;
  }
  return out;
}
