/**
 * VHD driver: one fixed, dynamic or differencing VHD file opened as an Image.
 *
 * Design notes (full map in NOTES.md)
 * - Layout: fixed = data + footer; dynamic/differencing = footer copy @0, dynamic header,
 *   BAT, (parent locator data), blocks [sector bitmap + data], footer. The footer at the end is
 *   authoritative; the copy at offset 0 is rewritten from it when a read-write open finds it
 *   different (a crash between the two footer writes of a metadata change).
 * - Size: vhd.md §2.2 per creator (structs.ts sizeRule): CHS geometry for "vpc ", "vs  ",
 *   "qemu" (unless the geometry is the maximum), current size for everyone else.
 * - Crash-safe allocation: footer at the new end of file, then bitmap + data where the old
 *   footer was, an fdatasync, then the BAT entries (and new bitmap bits of allocated blocks),
 *   before the write returns. No BAT entry or bitmap bit ever reaches the disk before the
 *   sectors it exposes; a process kill keeps every acknowledged write; a power cut leaks at
 *   most the new blocks, and between two barriers can leave no footer at the end (the file
 *   grew but its last sector did not reach the disk), which check --repair mends from the copy
 *   at offset 0 (see NOTES.md).
 *   Writes into allocated blocks: data first, then the bitmap bits that expose it.
 * - Bitmaps: a set bit means the sector is stored here. A clear bit (and an unallocated block)
 *   is `unallocated`: zeros in a dynamic image, the parent's sector in a differencing one.
 *   clusterSize is one sector, so the chain layer copies-on-write whole sectors.
 * - Identity: the footer's unique id (stored byte order, printed as libvhdi and QEMU print it).
 *   Writes never change it (Hyper-V does not either), nor the footer timestamp: children record
 *   both, and a parent that a child depends on is protected by the chain layer instead.
 */
import { DiskError } from '../../core/errors.js';
import type { Namespace } from '../../storage/namespace.js';
import { FileImage } from '../common/file-image.js';
import type { BackingChange, BackingLink, BlockExtent, Capabilities, CheckOptions, CheckReport, DiskInfo, Image, ImageMaintenance, LinkRecord, MappedExtent, OpenOptions } from '../types.js';
import { checkVhdStore } from './check.js';
import { BAT_UNUSED, FOOTER_SIZE, SECTOR } from './structs.js';
import { BITS, VHD_CAPABILITIES, setBits } from './layout.js';
import { appendExtent, appendMapped, appendSectorRuns } from '../common/extents.js';
import { oneFileInfo } from '../common/info.js';
import { unitSpans } from '../../core/ints.js';
import { loadVhd } from './open.js';
import { VhdMap } from './map.js';
import { checkWritable, typeOf, type VhdFile } from './state.js';
import * as links from './links.js';
import * as meta from './metadata.js';
import { closeUp, compact } from './compact.js';
import { defragment } from './defrag.js';
import { resizeVhd } from './resize.js';

const READ_ONLY_CAPABILITIES: Capabilities = Object.freeze({ ...VHD_CAPABILITIES, write: 'none' });

export class VhdImage extends FileImage<VhdFile> implements Image {
  readonly format = 'vhd';
  readonly clusterSize = SECTOR;
  readonly capabilities: Capabilities;
  private readonly map: VhdMap;

  private constructor(file: VhdFile) {
    super(file);
    // a fixed image has no block table: nothing to drop or reorder
    const caps = file.readOnly ? READ_ONLY_CAPABILITIES : VHD_CAPABILITIES;
    this.capabilities = typeOf(file) === 'fixed' ? Object.freeze({ ...caps, compact: 'none', defragment: 'none' }) : caps;
    this.map = new VhdMap(file);
  }

  get type(): string {
    return typeOf(this.file);
  }

  // ------------------------------------------------------------------ open (open.ts) and check (check.ts)

  static async open(ns: Namespace, path: string, opts: OpenOptions = {}): Promise<VhdImage> {
    const readOnly = !!opts.readOnly;
    const store = await ns.open(path, { write: !readOnly });
    let image: VhdImage;
    try {
      image = new VhdImage({ ...(await loadVhd(path, store, readOnly, !!opts.ignoreChecksums)), namespace: ns, closed: false });
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
    return image;
  }

  /**
   * Consistency check of this file (check.ts). An image that opened has intact checksums and
   * a sound BAT, so what is left is leaks, the footer copy and header oddities; after a repair
   * the structures are read again.
   */
  private async checkOpen(opts: CheckOptions): Promise<CheckReport> {
    if (opts.repair && !opts.dryRun) checkWritable(this.file);
    await this.map.commitPending();
    const report = await checkVhdStore(this.file.store, this.path, opts);
    if (report.findings.some((f) => f.repaired)) {
      const fresh = await loadVhd(this.path, this.file.store, this.readOnly, false);
      this.file.footer = fresh.footer;
      this.file.footerBytes = fresh.footerBytes;
      this.file.fileSize = fresh.fileSize;
      this.file.header = fresh.header;
      this.file.locators = fresh.locators;
      if (this.file.dyn && fresh.dyn) Object.assign(this.file.dyn, fresh.dyn);
      this.map.clearCache();
    }
    return report;
  }

  // ------------------------------------------------------------------ chain links (links.ts)

  backing(): BackingLink | undefined {
    return links.backing(this.file);
  }

  identity(): string {
    return links.identity(this.file);
  }

  setIdentity(id: string): Promise<void> {
    return links.setIdentity(this.file, this.map, id);
  }

  linkRecord(): LinkRecord {
    return links.linkRecord(this.file);
  }

  setBacking(link: BackingChange | undefined): Promise<void> {
    return links.setBacking(this.file, this.map, link);
  }

  makeEmpty(): Promise<void> {
    return links.makeEmpty(this.file, this.map);
  }

  // ------------------------------------------------------------------ I/O

  async read(into: Buffer, offset: number): Promise<void> {
    const d = this.file.dyn;
    if (!d) return this.file.store.readInto(into, offset);
    const parts: Promise<void>[] = [];
    for (const { index: b, within, pos, n } of unitSpans(offset, into.length, d.blockSize)) {
      const sub = into.subarray(pos, pos + n);
      if (d.bat[b] === BAT_UNUSED) sub.fill(0);
      else parts.push(this.map.readBlock(b, sub, within));
    }
    await Promise.all(parts);
  }

  async write(data: Buffer, offset: number): Promise<void> {
    checkWritable(this.file);
    const d = this.file.dyn;
    if (!d) return this.file.store.write(offset, data);
    const fresh: Fresh[] = [];
    for (const { index: b, within, pos, n } of unitSpans(offset, data.length, d.blockSize)) {
      const chunk = data.subarray(pos, pos + n);
      const s0 = Math.floor(within / SECTOR);
      const s1 = Math.ceil((within + n) / SECTOR);
      if (d.bat[b] === BAT_UNUSED) fresh.push({ b, s0, s1, data: padToSectors(chunk, within - s0 * SECTOR, s1 - s0) });
      else await this.map.writeAllocated(b, chunk, within);
    }
    if (fresh.length > 0) await this.allocate(fresh);
    // the sectors durable before the BAT entries and bitmap bits that expose them (one barrier
    // per request), then those at once: a process killed after the write returns keeps it
    await this.map.commitPending();
  }

  /**
   * New blocks at the end of the file, in the crash-safe order: (1) the footer at the new end,
   * (2) bitmaps and data where the old footer was (sectors not written stay holes: zeros),
   * (3) after an fdatasync, the BAT entries (commitPending, at the end of the write request).
   */
  private async allocate(fresh: Fresh[]): Promise<void> {
    const d = this.file.dyn!;
    const stride = d.bitmapBytes + d.blockSize;
    const start = d.nextFree;
    const end = start + fresh.length * stride;
    if ((end - stride) / SECTOR >= BAT_UNUSED) {
      throw new DiskError('NOSPACE', 'the VHD file is full: blocks cannot start beyond sector 2^32-1', { path: this.path, field: 'BAT' });
    }
    await this.file.store.write(end, this.file.footerBytes);
    const writes: Promise<void>[] = [];
    const bitmaps = fresh.map((f, i) => {
      const at = start + i * stride;
      const bitmap = Buffer.alloc(d.bitmapBytes);
      setBits(bitmap, f.s0, f.s1);
      writes.push(this.file.store.write(at, bitmap), this.file.store.write(at + d.bitmapBytes + f.s0 * SECTOR, f.data));
      return bitmap;
    });
    await Promise.all(writes);
    d.nextFree = end;
    this.file.fileSize = end + FOOTER_SIZE;
    fresh.forEach((f, i) => {
      d.bat[f.b] = (start + i * stride) / SECTOR;
      this.map.cacheBitmap(f.b, bitmaps[i]!);
      this.map.deferEntry(f.b);
    });
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const d = this.file.dyn;
    if (!d) return [{ offset, length, state: 'data' }];
    const out: BlockExtent[] = [];
    for (const { index: b, within, pos, n } of unitSpans(offset, length, d.blockSize)) {
      if (d.bat[b] === BAT_UNUSED) appendExtent(out, offset + pos, n, 'unallocated');
      else appendSectorRuns(out, { bits: BITS, bitmap: await this.map.bitmap(b), sectorSize: SECTOR }, offset + pos, within, n);
    }
    return out;
  }

  async mapStatus(offset: number, length: number): Promise<MappedExtent[]> {
    const d = this.file.dyn;
    if (!d) return [{ offset, length, state: 'data', file: this.path, fileOffset: offset }];
    const out: MappedExtent[] = [];
    for (const r of await this.blockStatus(offset, length)) {
      // a data run lies in one block's sectors: split it at block ends, each block's data after its bitmap
      for (const { index: b, within, pos, n } of unitSpans(r.offset, r.length, d.blockSize)) {
        if (r.state !== 'data') appendMapped(out, r.offset + pos, n, r.state);
        else appendMapped(out, r.offset + pos, n, 'data', this.path, d.bat[b]! * SECTOR + d.bitmapBytes + within);
      }
    }
    return out;
  }

  // ------------------------------------------------------------------ discard / compact

  /**
   * VHD has no zero marker: in a dynamic image whole blocks become unused (BAT 0xFFFFFFFF) and
   * the rest of the range gets zeros where sectors are stored; in a differencing image zeros are
   * written over the whole sectors of the range (they must hide the parent). The space of
   * dropped blocks comes back at once (closeUp). A fixed image gets zeros written.
   */
  async discard(offset: number, length: number): Promise<void> {
    checkWritable(this.file);
    await this.map.commitPending();
    const d = this.file.dyn;
    const end = offset + length;
    if (!d) return this.writeZeroRange(offset, end);
    if (this.type === 'differencing') {
      // whole sectors only: the rest of a partial sector the child lacks is the parent's
      const from = Math.ceil(offset / SECTOR) * SECTOR;
      const to = Math.floor(end / SECTOR) * SECTOR;
      if (to > from) await this.writeZeroRange(from, to);
      return;
    }
    const drop: number[] = [];
    for (let b = Math.floor(offset / d.blockSize); b * d.blockSize < end; b++) {
      const from = Math.max(offset, b * d.blockSize);
      const blockEnd = Math.min((b + 1) * d.blockSize, this.capacity);
      const to = Math.min(end, blockEnd);
      if (d.bat[b] === BAT_UNUSED) continue;
      if (from === b * d.blockSize && to === blockEnd) drop.push(b);
      else await this.map.writeAllocated(b, Buffer.alloc(to - from), from - b * d.blockSize);
    }
    if (drop.length > 0) {
      await this.map.dropBlocks(drop);
      await closeUp(this.file, this.map);
    }
  }

  private async writeZeroRange(from: number, to: number): Promise<void> {
    const z = Buffer.alloc(Math.min(to - from, 1024 * 1024));
    for (let at = from; at < to; at += z.length) await this.write(z.subarray(0, Math.min(z.length, to - at)), at);
  }

  async flush(): Promise<void> {
    await this.map.commitPending();
    await this.file.store.flush();
  }

  async close(): Promise<void> {
    if (this.file.closed) return;
    try {
      if (!this.readOnly) await this.flush();
    } finally {
      this.file.closed = true;
      await this.file.store.close();
    }
  }

  async info(): Promise<DiskInfo> {
    const link = this.backing();
    const f = this.file.footer;
    return oneFileInfo(this, {
      geometry: { cylinders: f.cylinders, heads: f.heads, sectors: f.sectorsPerTrack },
      links: { parent: link ? link.hint || link.hints?.[0] : undefined, parentCid: link?.parentId, uuid: this.identity(), version: f.fileFormatVersion >>> 16 },
      fileSize: this.file.fileSize,
      warnings: this.file.warnings,
      // a fixed image has no blocks; QEMU calls them clusters
      qemuFacts: { clusterSize: this.file.dyn?.blockSize },
    });
  }

  // ------------------------------------------------------------------ maintenance (compact.ts, defrag.ts, resize.ts)

  /** check (above); compact, defragment; resize in place (resize.ts, pending BAT entries written first), which closes the image */
  maintenance(): ImageMaintenance {
    const resize = async (file: VhdFile, map: VhdMap, newCapacity: number) => {
      await map.commitPending();
      await resizeVhd(file, map, newCapacity);
    };
    return this.maintenanceWith(this.map, { check: (opts) => this.checkOpen(opts), compact, defragment, resize });
  }

  // ------------------------------------------------------------------ metadata (metadata.ts)

  metadataKeys(): string[] {
    return meta.metadataKeys(this.file);
  }

  readMetadata(key: string): string | undefined {
    return meta.readMetadata(this.file, key);
  }

  writeMetadata(key: string, value: string): Promise<void> {
    return meta.writeMetadata(this.file, this.map, key, value);
  }
}

interface Fresh {
  b: number;
  s0: number;
  s1: number;
  /** sectors s0..s1 of the block */
  data: Buffer;
}

/** `chunk` placed at byte `at` of `sectors` zeroed sectors (no copy when it already is whole sectors). */
function padToSectors(chunk: Buffer, at: number, sectors: number): Buffer {
  if (at === 0 && chunk.length === sectors * SECTOR) return chunk;
  const buf = Buffer.alloc(sectors * SECTOR);
  chunk.copy(buf, at);
  return buf;
}
