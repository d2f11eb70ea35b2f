/**
 * The index of the last of `count` ascending keys that is <= `x` (0 when none is: callers keep
 * a first key of 0, so every non-negative `x` has one). `keyAt` reads the i-th key, so one search
 * serves arrays of numbers and arrays of records alike.
 */
export function lastAtOrBelow(count: number, keyAt: (i: number) => number, x: number): number {
  let lo = 0;
  let hi = count - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (keyAt(mid) <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
