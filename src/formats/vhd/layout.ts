/**
 * VHD layout knowledge that the image, the checker, create and the maintenance code share:
 * the in-memory shape of the dynamic structures, the size a footer gives, bitmap bit order, and
 * the parent locator codecs. Pure functions, no I/O: this module imports nothing of the folder
 * but structs.ts, which is what keeps check.ts, create.ts and image.ts free of cycles.
 */
import { Bitmap } from '../../binary/bitmap.js';
import { DiskError } from '../../core/errors.js';
import { toSafeNumber } from '../../core/ints.js';
import type { Capabilities } from '../types.js';
import { DYNAMIC_FIXED_CAPABILITIES } from '../common/driver.js';
import { MAX_VHD_BYTES, PLATFORM, ParentLocatorEntry, SECTOR, geometrySectors, sizeRule, type FooterValue } from './structs.js';

export const VHD_CAPABILITIES: Capabilities = Object.freeze({
  ...DYNAMIC_FIXED_CAPABILITIES,
  flush: 'exclusive',
});


/** One parent locator entry as found in (or written to) the dynamic header. */
export interface Locator {
  code: number;
  /** platform data space as stored (bytes in what we write; see NOTES.md) */
  space: number;
  length: number;
  offset: number;
  /** decoded path for the path codes */
  text?: string;
}

/** What a child records about its parent (dynamic header fields plus locator data). */
export interface ParentLinkage {
  parentUniqueId: Buffer;
  parentTimestamp: number;
  parentUnicodeName: Buffer;
  locators: { code: number; data: Buffer }[];
}

/** The dynamic disk structures as open found them, and where the next block goes. */
export interface DynamicState {
  headerOffset: number;
  tableOffset: number;
  /** maxTableEntries as stored */
  entries: number;
  blockSize: number;
  bitmapBytes: number;
  /** the entries the disk uses: ceil(capacity / blockSize) */
  bat: Uint32Array;
  /** where the next block goes: the footer's position, sector aligned */
  nextFree: number;
}

/** A byte range of the file that holds a structure (or a block). */
export interface Region {
  name: string;
  start: number;
  end: number;
}

export const PATH_CODES = new Set<number>([PLATFORM.W2ru, PLATFORM.W2ku, PLATFORM.Wi2r, PLATFORM.Wi2k, PLATFORM.MacX]);

/** The virtual size a footer gives, by its creator's rule (structs.ts sizeRule), whole sectors. */
export function capacityOf(f: FooterValue, path: string): number {
  let size: number;
  let field = 'currentSize';
  if (sizeRule(f) === 'chs') {
    size = geometrySectors({ cylinders: f.cylinders, heads: f.heads, sectors: f.sectorsPerTrack }) * SECTOR;
    field = 'cylinders';
  } else {
    size = Math.floor(toSafeNumber(f.currentSize, { path, struct: 'footer', field }) / SECTOR) * SECTOR;
  }
  if (size > MAX_VHD_BYTES) {
    throw new DiskError('CORRUPT', 'disk is larger than the VHD limit of 2040 GiB', { path, struct: 'footer', field, expected: `<= ${MAX_VHD_BYTES}`, found: size });
  }
  return size;
}

export const BITS = new Bitmap('msb');
export const setBits = (bm: Buffer, s0: number, s1: number): void => BITS.set(bm, s0, s1);
/** Runs of equal bits over sectors [s0, s1): [from, to, set]. */
export const sectorRuns = (bm: Buffer, s0: number, s1: number): [number, number, boolean][] => BITS.runs(bm, s0, s1);

export function decodeLocator(code: number, data: Buffer): string {
  let text: string;
  if (code === PLATFORM.W2ru || code === PLATFORM.W2ku) text = data.subarray(0, data.length & ~1).toString('utf16le');
  else if (code === PLATFORM.MacX) {
    const url = data.toString('utf8');
    try {
      text = url.startsWith('file://') ? decodeURIComponent(new URL(url).pathname) : url;
    } catch {
      text = url;
    }
  } else text = data.toString('utf8');
  return text.replace(/\0+$/, '');
}

/**
 * Bytes a locator's area holds for certain. The data space is a sector count per the spec and a
 * byte count in what Virtual PC, Hyper-V and VirtualBox write: read it as bytes when that covers
 * the data (the smaller reading), as sectors otherwise.
 */
export function locatorCapacity(l: Locator): number {
  return Math.max(l.length, l.space >= l.length ? l.space : l.space * SECTOR);
}

export function encodeLocators(placed: { code: number; data: Buffer; offset: number; space: number }[]): Buffer {
  const buf = Buffer.alloc(8 * 24);
  placed.forEach((p, i) => ParentLocatorEntry.encode({ platformCode: p.code, platformDataSpace: p.space, platformDataLength: p.data.length, platformDataOffset: BigInt(p.offset) }, buf, i * 24));
  return buf;
}
