/**
 * Block status answers as the drivers build them: runs appended in offset order, each merged
 * into the one before when their states match (callers walk block by block, but an answer should
 * have as few extents as its states allow), and the runs of a block whose sectors a bitmap marks
 * present or not (VHD dynamic and differencing blocks, VHDX partially present blocks).
 */
import type { Bitmap } from '../../binary/bitmap.js';
import type { BlockExtent, BlockState, MappedExtent } from '../types.js';

/** Append [offset, offset + length) in `state` to `out`, whose last extent ends at `offset`. */
export function appendExtent(out: BlockExtent[], offset: number, length: number, state: BlockState): void {
  const last = out[out.length - 1];
  if (last && last.state === state) last.length += length;
  else out.push({ offset, length, state });
}

/** appendExtent for mapStatus: ranges merge only when their bytes are contiguous in one file too */
export function appendMapped(out: MappedExtent[], offset: number, length: number, state: BlockState, file?: string, fileOffset?: number): void {
  appendMappedRange(out, fileOffset === undefined ? { offset, length, state } : { offset, length, state, file, fileOffset });
}

/** append `r` to `out`, merged into the last range when it continues it: state, depth, file and file offset */
export function appendMappedRange(out: MappedExtent[], r: MappedExtent): void {
  const last = out[out.length - 1];
  const placed = r.fileOffset === undefined ? last?.fileOffset === undefined : last?.fileOffset !== undefined && last.file === r.file && last.fileOffset + last.length === r.fileOffset;
  if (last && placed && last.state === r.state && last.depth === r.depth && last.offset + last.length === r.offset) last.length += r.length;
  else out.push({ ...r });
}

/** A bitmapped block: which of its sectors this image stores. */
export interface SectorBitmap {
  bits: Bitmap;
  bitmap: Buffer;
  sectorSize: number;
}

/**
 * Append the bytes [at, at + n) of a block, `within` bytes into it, as `data` where the bitmap
 * marks their sectors stored and `unallocated` (the parent's, or zeros) where it does not.
 */
export function appendSectorRuns(out: BlockExtent[], b: SectorBitmap, at: number, within: number, n: number): void {
  const ss = b.sectorSize;
  const blockAt = at - within;
  for (const [s0, s1, set] of b.bits.runs(b.bitmap, Math.floor(within / ss), Math.ceil((within + n) / ss))) {
    const from = Math.max(blockAt + s0 * ss, at);
    const to = Math.min(blockAt + s1 * ss, at + n);
    appendExtent(out, from, to - from, set ? 'data' : 'unallocated');
  }
}

/** the bytes a block status answer says this layer stores (DiskInfo.allocatedBytes) */
export function dataBytes(extents: readonly BlockExtent[]): number {
  let n = 0;
  for (const e of extents) if (e.state === 'data') n += e.length;
  return n;
}
