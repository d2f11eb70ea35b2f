/**
 * VDI driver: one VirtualBox disk image file opened as an Image.
 *
 * Design notes (full map in NOTES.md)
 * - Layout: pre-header + header (v1 0x180 or v1+ 0x190 bytes at 0x48), a block map (one u32 per
 *   virtual block: physical index, FREE = 0xFFFFFFFF, ZERO = 0xFFFFFFFE) at offBlocks, and the
 *   data area at offData where physical block p starts at offData + p * (cbBlock + cbBlockExtra).
 * - The whole map is validated when the image is opened (every index inside the file, none used
 *   twice, found with a bitmap after a pigeonhole count) and kept in memory; its size is bounded
 *   by the file size before anything is allocated.
 * - Crash-safe write order for a new block, VirtualBox's and QEMU's: the whole block at the end
 *   of the data area, then the header's cBlocksAllocated, then its map entry. A kill leaves at
 *   worst a block past the end of the data area or a count above the map's entries, with no
 *   entry at or past the count: a leak (the next allocation, ours or theirs, goes past it; the
 *   next read-write open or a repair sets the count from the map). The opposite order left a
 *   count below a live entry, where VirtualBox's and QEMU's allocators would reuse that block.
 * - uuidModify gets a new random value before the first change of a session (VirtualBox does
 *   the same), unless the caller preserves identity (chain operations).
 * - Differencing images record only their parent's UUIDs, never a path: backing() asks the
 *   chain layer to look for the parent by identity (the creation UUID, RFC-4122 text).
 */
import { DiskError, runAll } from '../../core/errors.js';
import type { Namespace } from '../../storage/namespace.js';
import { FileImage } from '../common/file-image.js';
import type { BackingChange, BackingLink, BlockExtent, Capabilities, CheckOptions, CheckReport, DiskInfo, Geometry, Image, ImageMaintenance, LinkRecord, MappedExtent, OpenOptions } from '../types.js';
import { checkVdiStore } from './check.js';
import { BLOCK_FREE, BLOCK_ZERO, TYPE_DIFF, TYPE_FIXED, isNullUuid, uuidToText, type VdiHeaderValue } from './structs.js';
import { isZero } from '../../binary/zeros.js';
import { ZEROS, planRead } from '../common/read-plan.js';
import { appendExtent, appendMapped } from '../common/extents.js';
import { oneFileInfo } from '../common/info.js';
import { unitSpans } from '../../core/ints.js';
import { VDI_CAPABILITIES, type HeaderKind } from './layout.js';
import { checkCount, parse } from './open.js';
import { VdiMap } from './map.js';
import { checkWritable, renewModify, typeOf, writeHeader, type VdiFile } from './state.js';
import * as links from './links.js';
import * as meta from './metadata.js';
import { compact, defragment } from './maintain.js';
import { resizeVdi } from './resize.js';

const READ_ONLY_CAPABILITIES: Capabilities = Object.freeze({ ...VDI_CAPABILITIES, write: 'none' });

export class VdiImage extends FileImage<VdiFile> implements Image {
  readonly format = 'vdi';
  /** Image.storeZeros: written zeros get a block like other data */
  storeZeros = false;
  readonly capabilities: Capabilities;
  readonly clusterSize: number;
  private readonly alloc: VdiMap;

  private constructor(file: VdiFile) {
    super(file);
    this.clusterSize = file.h.cbBlock;
    // a fixed image stores every block where its map says: nothing to drop or reorder
    const caps = file.readOnly ? READ_ONLY_CAPABILITIES : VDI_CAPABILITIES;
    this.capabilities = typeOf(file) === 'fixed' ? Object.freeze({ ...caps, compact: 'none', defragment: 'none' }) : caps;
    this.alloc = new VdiMap(file);
  }

  // ------------------------------------------------------------------ open (open.ts) and check (check.ts)

  static async open(ns: Namespace, path: string, opts: OpenOptions = {}): Promise<VdiImage> {
    const readOnly = !!opts.readOnly;
    const store = await ns.open(path, { write: !readOnly });
    try {
      const p = await parse(store, path);
      if (p.kind === 'v0' && !readOnly) {
        throw new DiskError('UNSUPPORTEDDISKVERSION', 'legacy VDI v0 images can only be opened read-only (convert them to write)', { path, field: 'version', found: '0.2' });
      }
      const file: VdiFile = {
        path,
        store,
        namespace: ns,
        h: p.h,
        kind: p.kind,
        map: p.map,
        capacity: p.capacity,
        readOnly,
        stride: p.h.cbBlock + p.h.cbBlockExtra,
        warnings: [],
        modifyRenewed: opts.updateIdentityOnWrite === false,
        closed: false,
        nextIndex: p.h.cBlocksAllocated,
      };
      const image = new VdiImage(file);
      await checkCount(file, p.used, p.maxIndex);
      if (p.h.type !== TYPE_DIFF && !isNullUuid(p.h.uuidLinkage)) {
        file.warnings.push(`base image carries a parent UUID ${uuidToText(p.h.uuidLinkage)} (VirtualBox 3.x copy bug); ignored`);
      }
      return image;
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
  }

  // ------------------------------------------------------------------ check

  /**
   * Consistency check of this file (check.ts). An open image already passed the map checks of
   * the open, so what is left to find here is counts, leaks and parent UUIDs; after a repair
   * the header and map are read again.
   */
  private async checkOpen(opts: CheckOptions): Promise<CheckReport> {
    if (opts.repair && !opts.dryRun) checkWritable(this.file);
    const report = await checkVdiStore(this.file.store, this.path, opts);
    if (report.findings.some((f) => f.repaired)) {
      const p = await parse(this.file.store, this.path);
      this.file.h = p.h;
      this.file.map.set(p.map);
      this.file.nextIndex = p.h.cBlocksAllocated;
    }
    return report;
  }

  get type(): string {
    return typeOf(this.file);
  }

  /** the raw header (tests, `vdkit info`): a copy */
  header(): VdiHeaderValue & { kind: HeaderKind } {
    return { ...this.file.h, kind: this.file.kind };
  }

  // ------------------------------------------------------------------ chain links (links.ts)

  backing(): BackingLink | undefined {
    return links.backing(this.file);
  }

  identity(): string {
    return links.identity(this.file);
  }

  setIdentity(id: string): Promise<void> {
    return links.setIdentity(this.file, id);
  }

  setBacking(link: BackingChange | undefined): Promise<void> {
    return links.setBacking(this.file, link);
  }

  linkRecord(): LinkRecord {
    return links.linkRecord(this.file);
  }

  makeEmpty(): Promise<void> {
    return links.makeEmpty(this.file, this.alloc);
  }

  // ------------------------------------------------------------------ I/O

  read(into: Buffer, offset: number): Promise<void> {
    return planRead(into, offset, {
      unit: this.file.h.cbBlock,
      locate: (b) => {
        const e = this.file.map[b]!;
        return e >= BLOCK_ZERO ? ZEROS : this.alloc.fileOffset(e, 0);
      },
      readFile: (part, at) => this.file.store.readInto(part, at),
    });
  }

  async write(data: Buffer, offset: number): Promise<void> {
    checkWritable(this.file);
    if (!this.file.modifyRenewed) await renewModify(this.file);
    const bs = this.file.h.cbBlock;
    const direct: Promise<void>[] = [];
    const fresh: { block: number; buf: Buffer }[] = [];
    const zeroed: number[] = [];
    for (const { index: b, within, pos, n } of unitSpans(offset, data.length, bs)) {
      const chunk = data.subarray(pos, pos + n);
      const e = this.file.map[b]!;
      if (e < BLOCK_ZERO) {
        direct.push(this.file.store.write(this.alloc.fileOffset(e, within), chunk));
      } else {
        // FREE or ZERO: the rest of the block reads as zeros here (a differencing image gets
        // whole blocks from the chain layer, which copies the parent's bytes around the write)
        const whole = within === 0 && n === bs;
        if (!this.storeZeros && isZero(chunk) && this.file.h.type !== TYPE_FIXED) {
          if (e !== BLOCK_ZERO) zeroed.push(b);
        } else if (whole) {
          fresh.push({ block: b, buf: chunk });
        } else {
          const buf = Buffer.alloc(bs);
          chunk.copy(buf, within);
          fresh.push({ block: b, buf });
        }
      }
    }
    await Promise.all(direct);
    if (fresh.length > 0) await this.allocate(fresh);
    if (zeroed.length > 0) {
      for (const b of zeroed) this.file.map[b] = BLOCK_ZERO;
      await this.alloc.writeMapEntries(zeroed);
    }
  }

  /** New blocks: data at the end of the data area, then the header count, then their map entries. */
  private async allocate(fresh: { block: number; buf: Buffer }[]): Promise<void> {
    const first = this.file.nextIndex;
    if (first + fresh.length > Math.min(this.file.h.cBlocks, BLOCK_ZERO)) {
      throw new DiskError('NOSPACE', 'the data area is full (more physical blocks than the map has entries)', { path: this.path, field: 'cBlocksAllocated', found: first });
    }
    const extra = this.file.h.cbBlockExtra;
    const bufs: Buffer[] = [];
    for (const f of fresh) {
      if (extra > 0) bufs.push(Buffer.alloc(extra));
      bufs.push(f.buf);
    }
    await this.file.store.writev(this.file.h.offData + first * this.file.stride, bufs);
    this.file.nextIndex = first + fresh.length;
    this.file.h.cBlocksAllocated = this.file.nextIndex;
    await writeHeader(this.file);
    // the blocks and the count durable before a map entry names them: a power cut keeps any
    // subset of the writes since the last flush, and an entry without its block names bytes past
    // the end of the file, one past the count a block the next allocation reuses (found by the
    // crash explorer, test/crash/)
    await this.file.store.flush();
    fresh.forEach((f, i) => (this.file.map[f.block] = first + i));
    await this.alloc.writeMapEntries(fresh.map((f) => f.block));
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const out: BlockExtent[] = [];
    for (const { index: b, pos, n } of unitSpans(offset, length, this.file.h.cbBlock)) {
      const e = this.file.map[b]!;
      appendExtent(out, offset + pos, n, e === BLOCK_FREE ? 'unallocated' : e === BLOCK_ZERO ? 'zero' : 'data');
    }
    return out;
  }

  async mapStatus(offset: number, length: number): Promise<MappedExtent[]> {
    const out: MappedExtent[] = [];
    for (const { index: b, within, pos, n } of unitSpans(offset, length, this.file.h.cbBlock)) {
      const e = this.file.map[b]!;
      if (e >= BLOCK_ZERO) appendMapped(out, offset + pos, n, e === BLOCK_FREE ? 'unallocated' : 'zero');
      else appendMapped(out, offset + pos, n, 'data', this.path, this.alloc.fileOffset(e, within));
    }
    return out;
  }

  async flush(): Promise<void> {
    await this.file.store.flush();
  }

  async close(): Promise<void> {
    if (this.file.closed) return;
    this.file.closed = true;
    await runAll([() => !this.readOnly && this.file.store.flush(), () => this.file.store.close()]);
  }

  // ------------------------------------------------------------------ discard / compact

  /**
   * Whole blocks in the range are dropped (FREE in a base, ZERO in a differencing image, so a
   * child still reads zeros, not its parent) and the data area is closed up at once, as
   * VirtualBox's discard does: a VDI data area must stay dense (QEMU allocates at
   * cBlocksAllocated). Parts of blocks are written as zeros where this image stores the block;
   * a part of a block a differencing image does not store is left to the chain layer (it needs
   * the parent's bytes for the rest of the block). A fixed image gets zeros written.
   */
  async discard(offset: number, length: number): Promise<void> {
    checkWritable(this.file);
    if (!this.file.modifyRenewed) await renewModify(this.file);
    const bs = this.file.h.cbBlock;
    const end = offset + length;
    const diff = this.file.h.type === TYPE_DIFF;
    const fixed = this.file.h.type === TYPE_FIXED;
    const drop: number[] = [];
    for (let b = Math.floor(offset / bs); b * bs < end; b++) {
      const from = Math.max(offset, b * bs);
      const blockEnd = Math.min((b + 1) * bs, this.capacity);
      const to = Math.min(end, blockEnd);
      const e = this.file.map[b]!;
      const whole = from === b * bs && to === blockEnd;
      if (whole && !fixed) {
        if (e < BLOCK_ZERO || (diff && e === BLOCK_FREE)) drop.push(b);
      } else if (e < BLOCK_ZERO) {
        await this.alloc.writeZeros(this.alloc.fileOffset(e, from - b * bs), to - from);
      }
    }
    await this.alloc.dropBlocks(drop);
  }

  async info(): Promise<DiskInfo> {
    const h = this.file.h;
    const geometry: Geometry | undefined = this.file.kind === 'v1+' && h.lchsCylinders > 0 && h.lchsHeads > 0 && h.lchsSectors > 0 ? { cylinders: h.lchsCylinders, heads: h.lchsHeads, sectors: h.lchsSectors } : undefined;
    const parent = h.type === TYPE_DIFF && !isNullUuid(h.uuidLinkage) ? uuidToText(h.uuidLinkage) : undefined;
    const id = this.identity();
    return oneFileInfo(this, {
      geometry,
      links: { parent, cid: id, parentCid: parent, uuid: id, version: this.file.kind === 'v0' ? 0 : 1 },
      fileOffset: h.offData,
      fileSize: await this.file.store.size(),
      warnings: this.file.warnings,
      qemuFacts: { clusterSize: h.cbBlock },
    });
  }

  // ------------------------------------------------------------------ maintenance (maintain.ts, resize.ts)

  /** check (above); compact, defragment; resize in place (resize.ts), which closes the image */
  maintenance(): ImageMaintenance {
    return this.maintenanceWith(this.alloc, { check: (opts) => this.checkOpen(opts), compact, defragment, resize: resizeVdi });
  }

  // ------------------------------------------------------------------ metadata (metadata.ts)

  metadataKeys(): string[] {
    return meta.metadataKeys(this.file);
  }

  readMetadata(key: string): string | undefined {
    return meta.readMetadata(this.file, key);
  }

  writeMetadata(key: string, value: string): Promise<void> {
    return meta.writeMetadata(this.file, key, value);
  }
}
