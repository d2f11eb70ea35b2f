import { DiskError, type ErrorDetails } from './errors.js';

export const SECTOR_SIZE = 512;

/** Narrow an on-disk 64-bit value to a safe JS number, or fail naming the field. */
export function toSafeNumber(v: bigint | number, details: ErrorDetails = {}): number {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new DiskError('CORRUPT', 'value is not a safe integer', { ...details, found: v });
    return v;
  }
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new DiskError('CORRUPT', 'value exceeds 2^53-1', { ...details, found: v });
  }
  return Number(v);
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

export function ceilDiv(a: number, b: number): number {
  return Math.floor((a + b - 1) / b);
}

export function roundUp(a: number, multiple: number): number {
  return ceilDiv(a, multiple) * multiple;
}

/** One piece of a byte range cut where units (pages, grains, blocks) begin. */
export interface UnitSpan {
  /** the unit */
  readonly index: number;
  /** where the piece starts inside the unit */
  readonly within: number;
  /** where it starts inside the range */
  readonly pos: number;
  /** its length */
  readonly n: number;
}

/** The pieces of the bytes [offset, offset + length), in order, each inside one unit of `unit` bytes. */
export function* unitSpans(offset: number, length: number, unit: number): Generator<UnitSpan> {
  for (let pos = 0; pos < length; ) {
    const at = offset + pos;
    const index = Math.floor(at / unit);
    const within = at - index * unit;
    const n = Math.min(unit - within, length - pos);
    yield { index, within, pos, n };
    pos += n;
  }
}

/** Validate a caller-given byte range against a capacity: OUTOFRANGE otherwise. */
export function checkRange(offset: number, length: number, capacity: number, path?: string): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new DiskError('INVAL', 'offset and length must be non-negative integers', { path, offset, length });
  }
  if (offset + length > capacity) {
    throw new DiskError('OUTOFRANGE', undefined, { path, offset, length, expected: `end <= ${capacity}`, found: offset + length });
  }
}

/**
 * What a size text says, before any range check: undefined when it is no size at all; the
 * number may be fractional or past 2^53 (parseSize refuses those, the CLI says which).
 */
export function sizeValue(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtpes]?)(i?b?)\s*$/i.exec(text);
  if (!m) return undefined;
  const unit = m[2]!.toLowerCase();
  const mult: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60, s: SECTOR_SIZE };
  return Number(m[1]) * mult[unit]!;
}

/** Parse a size such as "10G", "512M", "4096", "2048s" (sectors), "1.5G" into bytes. */
export function parseSize(text: string): number {
  const bytes = sizeValue(text);
  if (bytes === undefined) throw new DiskError('INVAL', `cannot parse size ${JSON.stringify(text)} (use a number with an optional K, M, G, T or s suffix)`);
  if (!Number.isSafeInteger(bytes)) throw new DiskError('INVAL', `size ${JSON.stringify(text)} is not a whole number of bytes below 2^53`);
  return bytes;
}
