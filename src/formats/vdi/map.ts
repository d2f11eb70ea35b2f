/**
 * The allocation map of a VDI: the block map in memory and on disk (entry writes, the header
 * and entries in one write), where a physical block lives, and dropping blocks with the data
 * area closed up in the crash-safe order (NOTES.md "Compact and discard"); `vdiRelayout` is
 * the map as the relayout engine (common/relayout.ts) consumes it.
 */
import { u32Bytes } from '../../binary/tables.js';
import { compactMap, storeMoves, type MapItem, type RelayoutMap } from '../common/relayout.js';
import type { ByteStore } from '../../storage/store.js';
import { BLOCK_FREE, BLOCK_ZERO, PRE_HEADER_SIZE, TYPE_DIFF, VdiHeaderV1, VdiHeaderV1Plus, type VdiHeaderValue } from './structs.js';
import type { HeaderKind } from './layout.js';
import { writeHeader, type VdiFile } from './state.js';

export class VdiMap {
  constructor(private readonly file: VdiFile) {}

  /** bytes of one allocation unit: a physical block and its extra bytes */
  get unit(): number {
    return this.file.stride;
  }

  /** file offset of virtual block b's data, or undefined when it is FREE or ZERO */
  lookup(b: number): number | undefined {
    const e = this.file.map[b];
    return e === undefined || e >= BLOCK_ZERO ? undefined : this.fileOffset(e, 0);
  }

  fileOffset(physical: number, within: number): number {
    return this.file.h.offData + physical * this.file.stride + this.file.h.cbBlockExtra + within;
  }

  /** Write the map entries of `blocks` (ascending), one write per run of neighbouring entries. */
  async writeMapEntries(blocks: number[]): Promise<void> {
    const sorted = [...blocks].sort((a, b) => a - b);
    const writes: Promise<void>[] = [];
    let lo = sorted[0]!;
    let hi = lo;
    for (let i = 1; i <= sorted.length; i++) {
      const b = sorted[i];
      if (b !== undefined && b - hi <= 128) {
        hi = b;
        continue;
      }
      writes.push(this.writeMapSpan(lo, hi + 1));
      if (b !== undefined) lo = hi = b;
    }
    await Promise.all(writes);
  }

  async writeMapSpan(from: number, to: number): Promise<void> {
    await this.file.store.write(this.file.h.offBlocks + from * 4, u32Bytes(this.file.map, from, to));
  }

  async writeZeros(at: number, length: number): Promise<void> {
    const z = Buffer.alloc(Math.min(length, 1024 * 1024));
    for (let done = 0; done < length; done += z.length) await this.file.store.write(at + done, z.subarray(0, Math.min(z.length, length - done)));
  }

  /**
   * Crash-safe order (NOTES.md "Compact and discard"): 1. the dropped entries FREE/ZERO, flush
   * (their slots become holes under an unchanged count: a leak); 2. the relayout engine
   * (vdiRelayout) copies the highest live blocks into the lowest holes, flush, then their
   * entries, flush; 3. the cut: the count set to the entries, flush, then the file cut after the
   * last block. At every step the count is at or above the highest used slot + 1, so no
   * allocator (ours, QEMU's, VirtualBox's) puts a new block over a live one.
   */
  async dropBlocks(blocks: number[]): Promise<void> {
    await this.markDropped(blocks);
    await compactMap(vdiRelayout(this.file, this, 'compact'));
  }

  /**
   * Step 1 of dropBlocks: the entries FREE (ZERO in a child), flush. The count stays: it is
   * lowered only by the cut, once the blocks above it have moved down (vdiRelayout). Lowering it
   * here, even in one write with the entries, let a power cut that tears the write keep the lower
   * count and the old entries, a count below a live slot that the next allocation (QEMU's,
   * VirtualBox's) would overwrite (found by the crash explorer); a count above the entries is a
   * leak.
   */
  async markDropped(blocks: number[]): Promise<void> {
    if (blocks.length === 0) return;
    const mark = this.file.h.type === TYPE_DIFF ? BLOCK_ZERO : BLOCK_FREE;
    for (const b of blocks) this.file.map[b] = mark;
    await this.writeMapEntries(blocks);
    await this.file.store.flush();
  }

  /** The header and map entries 0..last in one write (see dropBlocks and writeHeaderAndMap). */
  async writeHeaderAndEntries(last: number): Promise<void> {
    await writeHeaderAndMap(this.file.store, this.file.kind, this.file.h, this.file.map, last);
  }
}

/** the longest header-plus-map write writeHeaderAndMap makes in one piece */
const ONE_WRITE_MAX = 64 * 1024 * 1024;

/**
 * The header and map entries 0..last in ONE write from the end of the pre-header (the bytes
 * between the header and the map are read and written back unchanged), so that
 * cBlocksAllocated never disagrees with the entries on disk (compact's dropBlocks, check's
 * repair). Falls back to two writes, entries first, when the map does not follow the header or
 * the span would be large (the gap before the map is a header field: never sized by it without
 * a bound); returns which it did.
 */
export async function writeHeaderAndMap(store: ByteStore, kind: HeaderKind, h: VdiHeaderValue, map: Uint32Array, last: number): Promise<'one' | 'two'> {
  const header = kind === 'v1+' ? VdiHeaderV1Plus.encode(h) : VdiHeaderV1.encode(h as unknown as Parameters<typeof VdiHeaderV1.encode>[0]);
  const mapEnd = h.offBlocks + 4 * (last + 1);
  if (kind === 'v0' || h.offBlocks < header.length || mapEnd - PRE_HEADER_SIZE > ONE_WRITE_MAX) {
    await store.write(h.offBlocks, u32Bytes(map, 0, last + 1));
    await store.flush();
    await store.write(PRE_HEADER_SIZE, header.subarray(PRE_HEADER_SIZE));
    return 'two';
  }
  const span = Buffer.alloc(mapEnd - PRE_HEADER_SIZE);
  if (h.offBlocks > header.length) await store.readInto(span.subarray(header.length - PRE_HEADER_SIZE, h.offBlocks - PRE_HEADER_SIZE), header.length);
  header.copy(span, 0, PRE_HEADER_SIZE);
  u32Bytes(map, 0, last + 1).copy(span, h.offBlocks - PRE_HEADER_SIZE);
  await store.write(PRE_HEADER_SIZE, span);
  return 'one';
}

/**
 * A VDI for the relayout engine. Unit: one block slot of the data area (block and extra bytes,
 * from offData); entries: the allocated blocks in virtual order; nothing fixed inside the data
 * area. Every batch re-points entries only (the count never changes); a block is written only
 * into a slot no entry names. The cut first sets cBlocksAllocated when it was off before (a
 * compact's step 1 writes it otherwise), then truncates after the last block once no entry
 * points there. A defragment stopped between permutation cycles is cut the same way (the
 * scratch slot is free then).
 */
export function vdiRelayout(file: VdiFile, alloc: VdiMap, purpose: 'compact' | 'defragment'): RelayoutMap<number> {
  let items: MapItem<number>[] = [];
  const cut = async () => {
    const used = items.reduce((m, it) => Math.max(m, it.at + 1), 0);
    if (file.h.cBlocksAllocated !== items.length) {
      file.h.cBlocksAllocated = items.length;
      await writeHeader(file);
      await file.store.flush();
    }
    file.nextIndex = used;
    const end = file.h.offData + used * file.stride;
    if ((await file.store.size()) > end) {
      await file.store.truncate(end);
      await file.store.flush();
    }
  };
  return {
    path: file.path,
    unit: file.stride,
    base: file.h.offData,
    dataStart: 0,
    batch: 16,
    async entries() {
      items = [];
      for (let b = 0; b < file.map.length; b++) if (file.map[b]! < BLOCK_ZERO) items.push({ entry: b, at: file.map[b]!, len: 1 });
      return items;
    },
    fixed: async () => new Uint8Array(0),
    ...storeMoves(file.store),
    async setEntries(moves) {
      for (const m of moves) file.map[m.item.entry] = m.to;
      await alloc.writeMapEntries(moves.map((m) => m.item.entry));
    },
    cut,
    ...(purpose === 'defragment' ? { stopped: cut } : {}),
  };
}
