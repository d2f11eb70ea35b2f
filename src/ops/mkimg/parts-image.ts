/**
 * A mkimg image before it exists: a read-only Image over the table sectors and each
 * partition's contents at their offsets, so `convert` writes it into any format in one pass
 * (streamOptimized and raw to a pipe included) without a temporary raw file. Block status is
 * exact: table sectors are data, each content says where its own data is (a disk image by its
 * allocation, a host file by SEEK_DATA/SEEK_HOLE through the raw driver, a command's output by
 * the blocks that were not all zeros), and everything else is zero, so the target stays sparse.
 */
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE } from '../../core/ints.js';
import type { BlockExtent, DiskInfo, Image } from '../../formats/types.js';
import { appendExtent } from '../../formats/common/extents.js';
import type { Disk } from '../../disk.js';
import { SyntheticImage } from '../../formats/common/synthetic-image.js';

/** bytes held in memory, 64 KiB blocks that were not all zeros (a command's output) */
export interface SparseBytes {
  readonly blockSize: number;
  readonly blocks: ReadonlyMap<number, Buffer>;
  readonly length: number;
}

export type Piece =
  | { readonly offset: number; readonly length: number; readonly bytes: Buffer }
  | { readonly offset: number; readonly length: number; readonly disk: Disk }
  | { readonly offset: number; readonly length: number; readonly sparse: SparseBytes };

export class PartsImage extends SyntheticImage implements Image {
  readonly clusterSize = SECTOR_SIZE;
  readonly format = 'mkimg';
  readonly type = 'mkimg';
  private readonly pieces: readonly Piece[];

  constructor(
    readonly path: string,
    readonly capacity: number,
    pieces: readonly Piece[],
  ) {
    super();
    this.pieces = [...pieces].filter((p) => p.length > 0).sort((a, b) => a.offset - b.offset);
    this.pieces.forEach((p, i) => {
      const prev = this.pieces[i - 1];
      if (p.offset + p.length > capacity || (prev && prev.offset + prev.length > p.offset)) {
        throw new DiskError('INTERNAL', `mkimg pieces overlap or pass the end at ${p.offset}`, { path, offset: p.offset });
      }
    });
  }

  /** the pieces that meet [offset, offset+length), in order */
  private *meeting(offset: number, length: number): Generator<Piece> {
    const end = offset + length;
    let lo = 0;
    let hi = this.pieces.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const p = this.pieces[mid]!;
      if (p.offset + p.length <= offset) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.pieces.length && this.pieces[i]!.offset < end; i++) yield this.pieces[i]!;
  }

  async read(into: Buffer, offset: number): Promise<void> {
    into.fill(0);
    for (const p of this.meeting(offset, into.length)) {
      const from = Math.max(p.offset, offset);
      const to = Math.min(p.offset + p.length, offset + into.length);
      const dst = into.subarray(from - offset, to - offset);
      if ('bytes' in p) p.bytes.copy(dst, 0, from - p.offset, to - p.offset);
      else if ('disk' in p) await p.disk.readInto(dst, from - p.offset);
      else {
        const bs = p.sparse.blockSize;
        for (let at = from; at < to; ) {
          const rel = at - p.offset;
          const n = Math.min(to - at, bs - (rel % bs));
          p.sparse.blocks.get(Math.floor(rel / bs))?.copy(dst, at - from, rel % bs, (rel % bs) + n);
          at += n;
        }
      }
    }
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const out: BlockExtent[] = [];
    let at = offset;
    const add = (to: number, state: 'data' | 'zero') => {
      if (to > at) appendExtent(out, at, to - at, state);
      at = Math.max(at, to);
    };
    for (const p of this.meeting(offset, length)) {
      const from = Math.max(p.offset, offset);
      const to = Math.min(p.offset + p.length, offset + length);
      add(from, 'zero');
      if ('bytes' in p) add(to, 'data');
      else if ('disk' in p) {
        // a source that can only find its zeros by reading them is copied whole: the copy's zero detection finds them
        if (p.disk.image.capabilities.blockStatus === 'emulate') add(to, 'data');
        else for (const r of await p.disk.blockStatus(from - p.offset, to - from)) add(p.offset + r.offset + r.length, r.state === 'data' ? 'data' : 'zero');
      } else {
        const bs = p.sparse.blockSize;
        while (at < to) {
          const rel = at - p.offset;
          add(Math.min(to, at + bs - (rel % bs)), p.sparse.blocks.has(Math.floor(rel / bs)) ? 'data' : 'zero');
        }
      }
    }
    add(offset + length, 'zero');
    return out;
  }

  /** the contents' disks are the caller's to close */
  async close(): Promise<void> {}
  async info(): Promise<DiskInfo> {
    const allocatedBytes = (await this.blockStatus(0, this.capacity)).reduce((n, r) => n + (r.state === 'data' ? r.length : 0), 0);
    return { format: this.format, type: this.type, capacity: this.capacity, sectors: Math.ceil(this.capacity / SECTOR_SIZE), numLinks: 1, extents: [], files: [], allocatedBytes, fileSize: 0, diskSize: 0, readOnly: true };
  }
}
