/**
 * The allocation map of a dynamic or differencing VHD: the BAT (sector of each block's bitmap,
 * BAT_UNUSED when the block is not stored), the cached sector bitmaps, and the BAT entries and
 * bitmap bits that wait for the next flush (the crash-safe order in image.ts: no entry or bit
 * reaches the file before the data it exposes). The data path, compact, defragment and resize
 * use it; `vhdRelayout` is the map as the relayout engine (common/relayout.ts) consumes it.
 */
import { writeBitmapped } from '../common/bitmapped-write.js';
import { storeMoves, type MapItem, type RelayoutMap } from '../common/relayout.js';
import { DiskError } from '../../core/errors.js';
import { roundUp } from '../../core/ints.js';
import { u32Bytes } from '../../binary/tables.js';
import { BAT_UNUSED, FOOTER_SIZE, HEADER_SIZE, SECTOR } from './structs.js';
import { BITS, locatorCapacity, sectorRuns, type DynamicState, type Region } from './layout.js';
import type { VhdFile } from './state.js';

/** cached sector bitmaps, in bytes (a 2 MiB block has a 512-byte bitmap: 32768 blocks = 64 GiB) */
const BITMAP_CACHE_BYTES = 16 * 1024 * 1024;

export class VhdMap {
  private readonly bitmaps = new Map<number, Buffer>();
  /** blocks whose BAT entries wait for the next flush (commitPending) */
  private readonly pendingBat = new Set<number>();
  /** bitmaps with bits set since the last flush, and the byte range to write (commitPending) */
  private readonly pendingBitmaps = new Map<number, { bitmap: Buffer; lo: number; hi: number }>();
  private readonly bitmapLimit: number;

  constructor(private readonly file: VhdFile) {
    this.bitmapLimit = Math.max(16, Math.floor(BITMAP_CACHE_BYTES / (file.dyn?.bitmapBytes ?? SECTOR)));
  }

  // ------------------------------------------------------------------ the map as data

  /** bytes of one allocation unit: a block's bitmap and data */
  get unit(): number {
    const d = this.file.dyn!;
    return d.bitmapBytes + d.blockSize;
  }

  /** file offset of block b (its bitmap), or undefined when it is not stored */
  lookup(b: number): number | undefined {
    const e = this.file.dyn!.bat[b];
    return e === undefined || e === BAT_UNUSED ? undefined : e * SECTOR;
  }

  /** where the structures before the first block end (footer copy, header, BAT, locator data), sector aligned */
  metadataEnd(): number {
    const d = this.file.dyn!;
    let end = Math.max(SECTOR, d.headerOffset + HEADER_SIZE, d.tableOffset + d.entries * 4);
    for (const l of this.file.locators) if (l.length > 0) end = Math.max(end, l.offset + locatorCapacity(l));
    return roundUp(end, SECTOR);
  }

  /** parent locator data areas, sector aligned: blocks go around them */
  fixedRegions(): Region[] {
    return this.file.locators.filter((l) => l.length > 0).map((l) => ({ name: 'parent locator data', start: l.offset, end: roundUp(l.offset + locatorCapacity(l), SECTOR) }));
  }

  // ------------------------------------------------------------------ blocks, bitmaps, pending entries

  async readBlock(b: number, into: Buffer, within: number): Promise<void> {
    const d = this.file.dyn!;
    const bitmap = await this.bitmap(b);
    const dataAt = d.bat[b]! * SECTOR + d.bitmapBytes;
    const end = within + into.length;
    const reads: Promise<void>[] = [];
    for (const [a, z, set] of sectorRuns(bitmap, Math.floor(within / SECTOR), Math.ceil(end / SECTOR))) {
      const from = Math.max(a * SECTOR, within) - within;
      const to = Math.min(z * SECTOR, end) - within;
      if (set) reads.push(this.file.store.readInto(into.subarray(from, to), dataAt + within + from));
      else into.fill(0, from, to);
    }
    await Promise.all(reads);
  }

  /** Write into an allocated block: the data, then the bitmap bits that make it visible. */
  async writeAllocated(b: number, chunk: Buffer, within: number): Promise<void> {
    const d = this.file.dyn!;
    const bitmap = await this.bitmap(b);
    const deferBitmap = (lo: number, hi: number) => {
      const p = this.pendingBitmaps.get(b);
      if (p) {
        p.lo = Math.min(p.lo, lo);
        p.hi = Math.max(p.hi, hi);
      } else this.pendingBitmaps.set(b, { bitmap, lo, hi });
    };
    await writeBitmapped({ store: this.file.store, bits: BITS, bitmap, dataAt: d.bat[b]! * SECTOR + d.bitmapBytes, bitmapAt: d.bat[b]! * SECTOR, sectorSize: SECTOR, deferBitmap }, chunk, within);
  }

  /** block b's BAT entry (already set in memory) waits for the request's barrier (commitPending) */
  deferEntry(b: number): void {
    this.pendingBat.add(b);
  }

  /**
   * The BAT entries of blocks allocated by the current write request, written only after the blocks
   * are durable: without that barrier a power cut could keep an entry and lose its bitmap,
   * data or the file extension (an entry past the end, or a bitmap made of old footer bytes
   * that hides a parent's sectors). Every other operation that rewrites BAT entries or moves
   * blocks calls this first, so it never sees an entry that exists only in memory. Bitmap bits
   * set in allocated blocks wait likewise: bits that reach the file before their sectors would
   * expose zeros (or stale bytes) in place of the parent's sectors or the old data.
   */
  async commitPending(): Promise<void> {
    if (this.pendingBat.size === 0 && this.pendingBitmaps.size === 0) return;
    await this.file.store.flush();
    const d = this.file.dyn!;
    for (const [b, p] of [...this.pendingBitmaps]) {
      await this.file.store.write(d.bat[b]! * SECTOR + p.lo, p.bitmap.subarray(p.lo, p.hi));
      this.pendingBitmaps.delete(b);
    }
    const blocks = [...this.pendingBat];
    await this.writeBatEntries(blocks);
    for (const b of blocks) this.pendingBat.delete(b);
  }

  async writeBatEntries(blocks: number[]): Promise<void> {
    const d = this.file.dyn!;
    const sorted = [...blocks].sort((a, b) => a - b);
    for (let i = 0; i < sorted.length; ) {
      let j = i + 1;
      while (j < sorted.length && sorted[j] === sorted[j - 1]! + 1) j++;
      await this.file.store.write(d.tableOffset + sorted[i]! * 4, u32Bytes(d.bat, sorted[i]!, sorted[j - 1]! + 1, 'be'));
      i = j;
    }
  }

  async bitmap(b: number): Promise<Buffer> {
    const hit = this.pendingBitmaps.get(b)?.bitmap ?? this.bitmaps.get(b);
    if (hit) return hit;
    const d = this.file.dyn!;
    const read = await this.file.store.read(d.bat[b]! * SECTOR, d.bitmapBytes);
    // a write may have cached (and changed) this bitmap while we were reading it: keep that one
    return this.bitmaps.get(b) ?? this.cacheBitmap(b, read);
  }

  cacheBitmap(b: number, bitmap: Buffer): Buffer {
    if (this.bitmaps.size >= this.bitmapLimit) this.bitmaps.delete(this.bitmaps.keys().next().value!);
    this.bitmaps.set(b, bitmap);
    return bitmap;
  }

  /** BAT entries unused (they read zeros, or the parent where no sector was stored), flush. */
  async dropBlocks(blocks: number[]): Promise<void> {
    if (blocks.length === 0) return;
    const d = this.file.dyn!;
    for (const b of blocks) {
      d.bat[b] = BAT_UNUSED;
      this.bitmaps.delete(b);
    }
    await this.writeBatEntries(blocks);
    await this.file.store.flush();
  }

  /** forget every cached bitmap (the BAT changed under them: makeEmpty, a repair) */
  clearCache(): void {
    this.bitmaps.clear();
  }
}

/**
 * The file cut after `newEnd` (blocks and metadata end there): a footer at the new end (space
 * nothing uses), flush, then the truncate; until the truncate the old footer is still the last
 * sector. New blocks go after the footer's place again.
 */
export async function cutAfter(file: VhdFile, newEnd: number, d: DynamicState): Promise<void> {
  if (newEnd < file.fileSize - FOOTER_SIZE) {
    await file.store.write(newEnd, file.footerBytes);
    await file.store.flush();
    await file.store.truncate(newEnd + FOOTER_SIZE);
    await file.store.flush();
    file.fileSize = newEnd + FOOTER_SIZE;
  }
  d.nextFree = roundUp(file.fileSize - FOOTER_SIZE, SECTOR);
}

/**
 * A dynamic or differencing VHD for the relayout engine (common/relayout.ts). Unit: one sector
 * (blocks may start at any sector: Virtual PC and Hyper-V layouts leave gaps); entries: the
 * stored blocks (bitmap + data) in BAT order; fixed: the footer copy, header and BAT, and
 * parent locator data. A target past the footer gets a footer at the new end first (as a new
 * block does), so the file always ends in a valid footer; a BAT entry is written only after
 * its block is durable, and a block is written only where no entry names it. The cut writes a
 * footer at the new end, flush, then truncates (cutAfter). `batch`: blocks per crash-safe step
 * (defragment moves one at a time, as before the engine: progress and a cancel per block).
 */
export function vhdRelayout(file: VhdFile, map: VhdMap, batch: number): RelayoutMap<number> {
  const d = file.dyn!;
  const stride = d.bitmapBytes + d.blockSize;
  const headEnd = roundUp(Math.max(SECTOR, d.headerOffset + HEADER_SIZE, d.tableOffset + d.entries * 4), SECTOR);
  const regions = map.fixedRegions();
  const metaEnd = map.metadataEnd();
  let items: MapItem<number>[] = [];
  return {
    path: file.path,
    unit: SECTOR,
    dataStart: headEnd / SECTOR,
    batch,
    async entries() {
      items = [];
      for (let b = 0; b < d.bat.length; b++) if (d.bat[b] !== BAT_UNUSED) items.push({ entry: b, at: d.bat[b]!, len: stride / SECTOR });
      return items;
    },
    async fixed() {
      const fixed = new Uint8Array(metaEnd / SECTOR);
      fixed.fill(1, 0, headEnd / SECTOR);
      for (const r of regions) fixed.fill(1, Math.floor(r.start / SECTOR), r.end / SECTOR);
      return fixed;
    },
    async reserve(moves) {
      const reach = Math.max(...moves.map((m) => (m.to + m.item.len) * SECTOR));
      if (reach / SECTOR >= BAT_UNUSED) throw new DiskError('NOSPACE', 'no room to move a block out of the way: blocks cannot start beyond sector 2^32-1', { path: file.path, field: 'BAT' });
      if (reach <= file.fileSize - FOOTER_SIZE) return false;
      // past the footer: it goes to the new end first (durable before the copies), as for a new block
      await file.store.write(reach, file.footerBytes);
      file.fileSize = reach + FOOTER_SIZE;
      return true;
    },
    ...storeMoves(file.store),
    async setEntries(moves) {
      for (const m of moves) d.bat[m.item.entry] = m.to;
      await map.writeBatEntries(moves.map((m) => m.item.entry));
    },
    async cut() {
      let end = metaEnd;
      for (const it of items) end = Math.max(end, (it.at + it.len) * SECTOR);
      await cutAfter(file, roundUp(end, SECTOR), d);
    },
    async stopped() {
      d.nextFree = roundUp(file.fileSize - FOOTER_SIZE, SECTOR);
    },
  };
}
