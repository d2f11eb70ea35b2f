/**
 * VirtualBox's VD flag words (vd.h r40483), with its names and bit values, so a program ported
 * from VD reads the same: VD_OPEN_FLAGS_* (how one image of a container is opened) and
 * VD_IMAGE_FLAGS_* (what kind of image it is, given to VDCreateBase/VDCreateDiff and reported
 * by VDGetImageFlags). What each open flag does in vdkit is said in vd/NOTES.md.
 */
import { DiskError } from '../core/errors.js';
import type { Driver, Image } from '../formats/types.js';

export const VD_OPEN_FLAGS_NORMAL = 0;
export const VD_OPEN_FLAGS_READONLY = 1 << 0;
export const VD_OPEN_FLAGS_HONOR_ZEROES = 1 << 1;
export const VD_OPEN_FLAGS_HONOR_SAME = 1 << 2;
export const VD_OPEN_FLAGS_INFO = 1 << 3;
export const VD_OPEN_FLAGS_ASYNC_IO = 1 << 4;
export const VD_OPEN_FLAGS_SHAREABLE = 1 << 5;
export const VD_OPEN_FLAGS_SEQUENTIAL = 1 << 6;
export const VD_OPEN_FLAGS_DISCARD = 1 << 7;
export const VD_OPEN_FLAGS_IGNORE_FLUSH = 1 << 8;
export const VD_OPEN_FLAGS_MASK = (1 << 9) - 1;

export const VD_IMAGE_FLAGS_NONE = 0;
export const VD_IMAGE_FLAGS_FIXED = 0x10000;
export const VD_IMAGE_FLAGS_DIFF = 0x20000;
export const VD_VMDK_IMAGE_FLAGS_SPLIT_2G = 0x0001;
export const VD_VMDK_IMAGE_FLAGS_RAWDISK = 0x0002;
export const VD_VMDK_IMAGE_FLAGS_STREAM_OPTIMIZED = 0x0004;
export const VD_VMDK_IMAGE_FLAGS_ESX = 0x0008;
export const VD_VDI_IMAGE_FLAGS_ZERO_EXPAND = 0x0100;
export const VD_IMAGE_FLAGS_MASK = VD_IMAGE_FLAGS_FIXED | VD_IMAGE_FLAGS_DIFF | VD_VMDK_IMAGE_FLAGS_SPLIT_2G | VD_VMDK_IMAGE_FLAGS_RAWDISK | VD_VMDK_IMAGE_FLAGS_STREAM_OPTIMIZED | VD_VMDK_IMAGE_FLAGS_ESX | VD_VDI_IMAGE_FLAGS_ZERO_EXPAND;

/** VDCopyEx's nImageFromSame/nImageToSame for "the two chains share nothing known" */
export const VD_IMAGE_CONTENT_UNKNOWN = 0xffffffff;

const OPEN_NAMES: readonly [number, string][] = [
  [VD_OPEN_FLAGS_READONLY, 'READONLY'],
  [VD_OPEN_FLAGS_HONOR_ZEROES, 'HONOR_ZEROES'],
  [VD_OPEN_FLAGS_HONOR_SAME, 'HONOR_SAME'],
  [VD_OPEN_FLAGS_INFO, 'INFO'],
  [VD_OPEN_FLAGS_ASYNC_IO, 'ASYNC_IO'],
  [VD_OPEN_FLAGS_SHAREABLE, 'SHAREABLE'],
  [VD_OPEN_FLAGS_SEQUENTIAL, 'SEQUENTIAL'],
  [VD_OPEN_FLAGS_DISCARD, 'DISCARD'],
  [VD_OPEN_FLAGS_IGNORE_FLUSH, 'IGNORE_FLUSH'],
];

const IMAGE_NAMES: readonly [number, string][] = [
  [VD_IMAGE_FLAGS_FIXED, 'FIXED'],
  [VD_IMAGE_FLAGS_DIFF, 'DIFF'],
  [VD_VMDK_IMAGE_FLAGS_SPLIT_2G, 'SPLIT_2G'],
  [VD_VMDK_IMAGE_FLAGS_RAWDISK, 'RAWDISK'],
  [VD_VMDK_IMAGE_FLAGS_STREAM_OPTIMIZED, 'STREAM_OPTIMIZED'],
  [VD_VMDK_IMAGE_FLAGS_ESX, 'ESX'],
  [VD_VDI_IMAGE_FLAGS_ZERO_EXPAND, 'ZERO_EXPAND'],
];

function names(word: number, table: readonly [number, string][], none: string): string {
  const set = table.filter(([bit]) => (word & bit) !== 0).map(([, n]) => n);
  return set.length > 0 ? set.join('|') : none;
}

/** "READONLY|INFO", or "NORMAL" */
export const openFlagNames = (flags: number): string => names(flags, OPEN_NAMES, 'NORMAL');
/** "FIXED|SPLIT_2G", or "NONE" */
export const imageFlagNames = (flags: number): string => names(flags, IMAGE_NAMES, 'NONE');

/** INVAL for bits VD does not define (VERR_INVALID_PARAMETER) */
export function checkOpenFlags(flags: number, path?: string): void {
  if (!Number.isInteger(flags) || flags < 0 || (flags & ~VD_OPEN_FLAGS_MASK) !== 0) {
    throw new DiskError('INVAL', 'unknown VD_OPEN_FLAGS bits', { path, field: 'uOpenFlags', found: flags, expected: `a combination of ${OPEN_NAMES.map(([, n]) => n).join(', ')}` });
  }
}

/**
 * The type names (as drivers report them in `Image.type`) VD's image flags stand for. Flags are
 * VirtualBox's encoding of a type, so this table, not a format name, decides them.
 */
const FIXED_TYPES = new Set(['fixed', 'raw', 'monolithicFlat', 'twoGbMaxExtentFlat', 'vmfs', 'vmfsPreallocated', 'vmfsEagerZeroedThick']);
const SPLIT_TYPES = new Set(['twoGbMaxExtentSparse', 'twoGbMaxExtentFlat']);
const ESX_TYPES = /^vmfs/;

/** VDGetImageFlags of an open image */
export function imageFlagsOf(img: Image): number {
  let f = VD_IMAGE_FLAGS_NONE;
  if (FIXED_TYPES.has(img.type)) f |= VD_IMAGE_FLAGS_FIXED;
  if (img.backing()) f |= VD_IMAGE_FLAGS_DIFF;
  if (SPLIT_TYPES.has(img.type)) f |= VD_VMDK_IMAGE_FLAGS_SPLIT_2G;
  if (img.type === 'streamOptimized') f |= VD_VMDK_IMAGE_FLAGS_STREAM_OPTIMIZED;
  if (ESX_TYPES.test(img.type)) f |= VD_VMDK_IMAGE_FLAGS_ESX;
  return f;
}

/**
 * The create type for image flags given to VDCreateBase/VDCreateDiff: the first candidate the
 * driver can create, undefined for the driver's default. ZERO_EXPAND (VDI: zero new blocks as
 * they are allocated) changes nothing vdkit shows, since new blocks always read as zeros.
 */
export function createTypeFor(driver: Driver, flags: number, opts: { diff: boolean; path: string }): string | undefined {
  const bad = (why: string) => new DiskError('NOTSUPPORTED', `${imageFlagNames(flags)}: ${why}`, { path: opts.path, field: 'uImageFlags', found: flags });
  if ((flags & ~VD_IMAGE_FLAGS_MASK) !== 0) throw new DiskError('INVAL', 'unknown VD_IMAGE_FLAGS bits', { path: opts.path, field: 'uImageFlags', found: flags });
  if (flags & VD_VMDK_IMAGE_FLAGS_RAWDISK) throw bad('raw-disk images are made from a VBOXHDDRAW description, not created here');
  if (flags & VD_VMDK_IMAGE_FLAGS_STREAM_OPTIMIZED) throw bad('streamOptimized images are written front to back once (convert), not opened for random writes');
  if (flags & VD_IMAGE_FLAGS_DIFF && !opts.diff) throw bad('a base image cannot be a differencing one (use createDiff)');
  const fixed = (flags & VD_IMAGE_FLAGS_FIXED) !== 0;
  if (fixed && opts.diff) throw bad('a differencing image is never fixed');
  const split = (flags & VD_VMDK_IMAGE_FLAGS_SPLIT_2G) !== 0;
  const esx = (flags & VD_VMDK_IMAGE_FLAGS_ESX) !== 0;
  let candidates: (string | undefined)[];
  if (esx) candidates = fixed ? ['vmfs'] : [];
  else if (fixed) candidates = split ? ['twoGbMaxExtentFlat'] : ['monolithicFlat', 'fixed', 'raw'];
  else if (split) candidates = ['twoGbMaxExtentSparse'];
  else return undefined;
  const types = driver.capabilities.createTypes;
  const hit = candidates.find((t) => t !== undefined && types.includes(t));
  if (hit === undefined) throw bad(`${driver.name} cannot create such an image (its types: ${types.join(', ') || 'none'})`);
  return hit;
}
