/**
 * The allocation map of a VDI: the block map in memory and on disk (entry writes, the header
 * and entries in one write), where a physical block lives, and dropping blocks with the data
 * area closed up in the crash-safe order (NOTES.md "Compact and discard"); `vdiRelayout` is
 * the map as the relayout engine (common/relayout.ts) consumes it.
 */
import { u32Bytes } from '../../binary/tables.js';
import { compactMap, type MapItem, type RelayoutMap } from '../common/relayout.js';
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
   * Crash-safe order (NOTES.md "Compact and discard"). QEMU's check (and ours) calls any
   * difference between cBlocksAllocated and the allocated entries a corruption, so the count and
   * the entries change in ONE write: 1. the dropped entries FREE/ZERO and the new count, written
   * as a single write from the header to the last changed entry (the bytes between are read and
   * written back unchanged), flush: their slots become holes, a leak; 2. the relayout engine
   * (vdiRelayout) copies the highest live blocks into the lowest holes, flush, then their
   * entries, flush (the count does not change: the same blocks stay allocated); 3. the file cut
   * after the last block only when no entry points there any more (a kill before it leaves a
   * trailing leak).
   * Why one write is enough: a fatal signal stops a write only between pages, and the header
   * and the first 896 entries of a map right after the header (QEMU's layout) share page 0; a
   * map further out (VirtualBox's, at 1 MiB) makes the write longer, so a kill landing inside
   * the copy itself could still split it (the count then differs from the entries; a repair or
   * the next read-write open re-derives it). Between steps 1 and 2 the data area has holes and
   * cBlocksAllocated is below the highest used slot + 1: QEMU's allocator would reuse a live
   * slot, which is why vdkit's own read-write open refuses such an image (NEEDSREPAIR) until a
   * repair or another compact closes the holes.
   */
  async dropBlocks(blocks: number[]): Promise<void> {
    await this.markDropped(blocks);
    await compactMap(vdiRelayout(this.file, this, 'compact'));
  }

  /** Step 1 of dropBlocks: the entries FREE (ZERO in a child) and the count, in one write, flush. */
  async markDropped(blocks: number[]): Promise<void> {
    if (blocks.length === 0) return;
    const mark = this.file.h.type === TYPE_DIFF ? BLOCK_ZERO : BLOCK_FREE;
    for (const b of blocks) this.file.map[b] = mark;
    let allocated = 0;
    for (let i = 0; i < this.file.map.length; i++) if (this.file.map[i]! < BLOCK_ZERO) allocated++;
    this.file.h.cBlocksAllocated = allocated;
    await this.writeHeaderAndEntries(blocks.reduce((m, b) => Math.max(m, b), 0));
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
    async read(into, at) {
      await file.store.readInto(into, at);
      return into;
    },
    write: (data, at) => file.store.write(at, data),
    flush: () => file.store.flush(),
    async setEntries(moves) {
      for (const m of moves) file.map[m.item.entry] = m.to;
      await alloc.writeMapEntries(moves.map((m) => m.item.entry));
    },
    cut,
    ...(purpose === 'defragment' ? { stopped: cut } : {}),
  };
}
