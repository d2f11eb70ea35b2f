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
 * - Crash-safe write order for a new block: the whole block at the end of the data area first,
 *   then its map entry, then the header's cBlocksAllocated. A crash leaves at worst a block past
 *   the end of the data area (overwritten by the next allocation) or a count one short of the map
 *   (re-derived from the map at the next read-write open).
 * - uuidModify gets a new random value before the first change of a session (VirtualBox does
 *   the same), unless the caller preserves identity (chain operations).
 * - Differencing images record only their parent's UUIDs, never a path: backing() asks the
 *   chain layer to look for the parent by identity (the creation UUID, RFC-4122 text).
 */
import { DiskError, atMost, type ErrorCode } from '../../core/errors.js';
import { ceilDiv, isPowerOfTwo, toSafeNumber } from '../../core/ints.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { BackingChange, BackingLink, BlockExtent, BlockState, Capabilities, CheckOptions, CheckReport, DiskInfo, Geometry, Image, InPlaceOptions, InPlaceResult, LinkRecord, OpenOptions } from '../types.js';
import { checkVdiStore } from './check.js';
import {
  BLOCK_FREE,
  BLOCK_ZERO,
  HEADER_V1PLUS_SIZE,
  HEADER_V1_SIZE,
  KNOWN_FLAGS,
  NULL_UUID,
  PRE_HEADER_SIZE,
  SECTOR,
  TYPE_DIFF,
  TYPE_FIXED,
  TYPE_NORMAL,
  TYPE_UNDO,
  VDI_SIGNATURE,
  VDI_VERSION_LEGACY,
  VdiHeaderV0,
  VdiHeaderV1,
  VdiHeaderV1Plus,
  VdiPreHeader,
  isNullUuid,
  newUuid,
  uuidFromText,
  uuidToText,
  type VdiHeaderValue,
} from './structs.js';
import { isZero } from '../../binary/zeros.js';
import { readU32Array, u32Bytes } from '../../binary/tables.js';
import { ZEROS, planRead } from '../common/read-plan.js';

export const VDI_CAPABILITIES: Capabilities = Object.freeze({
  write: 'native',
  blockStatus: 'native',
  zero: 'native',
  metadata: true,
  createTypes: ['dynamic', 'fixed'],
  differencing: true,
  differencingSameSize: true,
  parentLink: 'identity',
  identityFollowsContent: false,
  split: false,
  discard: 'native',
  resize: 'grow-shrink',
  flush: 'concurrent',
  check: 'repair',
  compact: 'native',
  defragment: 'native',
});
const READ_ONLY_CAPABILITIES: Capabilities = Object.freeze({ ...VDI_CAPABILITIES, write: 'none' });

/** block sizes we accept: a sector up to 32 MiB (per-block buffers are sized by this field) */
export const MIN_BLOCK_SIZE = SECTOR;
export const MAX_BLOCK_SIZE = 32 * 1024 * 1024;
/** QEMU's cap on blocks_in_image (a 2 GiB map); we refuse more too */
export const MAX_BLOCKS = 0x1fffff80;
/** VirtualBox's largest disk: 4 PiB - 3 MiB */
export const MAX_DISK_BYTES = 4 * 2 ** 50 - 3 * 2 ** 20;

export type HeaderKind = 'v0' | 'v1' | 'v1+';

/** Metadata keys (NOTES.md "Metadata"); `type` is read-only. */
export const METADATA_KEYS = ['comment', 'uuid', 'modificationUuid', 'parentUuid', 'parentModificationUuid', 'geometry.cylinders', 'geometry.heads', 'geometry.sectors', 'type'] as const;

const TYPE_NAMES: Record<number, string> = { [TYPE_NORMAL]: 'dynamic', [TYPE_FIXED]: 'fixed', [TYPE_UNDO]: 'dynamic', [TYPE_DIFF]: 'differencing' };

interface Parsed {
  h: VdiHeaderValue;
  kind: HeaderKind;
  map: Uint32Array;
  capacity: number;
  /** allocated entries in the map */
  used: number;
  /** highest physical index used, -1 when none */
  maxIndex: number;
}

export class VdiImage implements Image {
  readonly format = 'vdi';
  readonly capacity: number;
  readonly capabilities: Capabilities;
  readonly clusterSize: number;
  private readonly stride: number;
  private readonly warnings: string[] = [];
  private modifyRenewed: boolean;
  private closed = false;
  /** physical index of the next new block (= cBlocksAllocated of a consistent image) */
  private nextIndex: number;

  /** set by open: where this image's file is named */
  namespace!: Namespace;
  private constructor(
    readonly path: string,
    private readonly store: ByteStore,
    private h: VdiHeaderValue,
    private kind: HeaderKind,
    private readonly map: Uint32Array,
    capacity: number,
    readonly readOnly: boolean,
    preserveIdentity: boolean,
  ) {
    this.capacity = capacity;
    this.clusterSize = h.cbBlock;
    this.stride = h.cbBlock + h.cbBlockExtra;
    this.capabilities = readOnly ? READ_ONLY_CAPABILITIES : VDI_CAPABILITIES;
    this.modifyRenewed = preserveIdentity;
    this.nextIndex = h.cBlocksAllocated;
  }

  static async open(ns: Namespace, path: string, opts: OpenOptions = {}): Promise<VdiImage> {
    const readOnly = !!opts.readOnly;
    const store = await ns.open(path, { write: !readOnly });
    try {
      const p = await parse(store, path);
      if (p.kind === 'v0' && !readOnly) {
        throw new DiskError('UNSUPPORTEDDISKVERSION', 'legacy VDI v0 images can only be opened read-only (convert them to write)', { path, field: 'version', found: '0.2' });
      }
      if (!readOnly && p.h.type === TYPE_DIFF && !opts.cowByCaller) {
        // alone, a partial write to a block the image lacks could only zero-fill the rest of it
        throw new DiskError('PARTIALCHAIN', 'this is a differencing image: open its chain (without singleLink) to write to it, or open it read-only to inspect it', {
          path,
          field: 'type',
          found: 'differencing',
        });
      }
      const image = new VdiImage(path, store, p.h, p.kind, p.map, p.capacity, readOnly, !!opts.preserveIdentity);
      image.namespace = ns;
      await image.checkCount(p.used, p.maxIndex);
      if (p.h.type !== TYPE_DIFF && !isNullUuid(p.h.uuidLinkage)) {
        image.warnings.push(`base image carries a parent UUID ${uuidToText(p.h.uuidLinkage)} (VirtualBox 3.x copy bug); ignored`);
      }
      return image;
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
  }

  /**
   * cBlocksAllocated must equal the number of allocated map entries and the data area must be
   * dense (indices 0..n-1). Read-only: a mismatch is reported in info().warnings. Read-write: a
   * dense map with a wrong count (what a crash between map entry and header leaves) is repaired
   * by writing the count from the map; a data area with unused slots needs repair (NEEDSREPAIR).
   */
  private async checkCount(used: number, maxIndex: number): Promise<void> {
    const dense = maxIndex + 1 === used;
    if (used === this.h.cBlocksAllocated && dense) return;
    const what = dense
      ? `cBlocksAllocated is ${this.h.cBlocksAllocated} but the block map has ${used} allocated blocks`
      : `the data area has unused slots (${used} blocks allocated, highest index ${maxIndex}, cBlocksAllocated ${this.h.cBlocksAllocated})`;
    if (this.readOnly) {
      this.warnings.push(what);
      this.nextIndex = Math.max(used, maxIndex + 1);
      return;
    }
    if (!dense) {
      throw new DiskError('NEEDSREPAIR', `${what}: open read-only, or convert the image`, { path: this.path, struct: 'VdiHeader', field: 'cBlocksAllocated', expected: used, found: this.h.cBlocksAllocated });
    }
    this.h.cBlocksAllocated = used;
    this.nextIndex = used;
    await this.writeHeader();
    await this.store.flush();
    this.warnings.push(`${what}; repaired`);
  }

  get type(): string {
    return TYPE_NAMES[this.h.type] ?? 'dynamic';
  }

  /** the raw header (tests, `vdkit info`): a copy */
  header(): VdiHeaderValue & { kind: HeaderKind } {
    return { ...this.h, kind: this.kind };
  }

  backing(): BackingLink | undefined {
    if (this.h.type !== TYPE_DIFF) return undefined;
    if (isNullUuid(this.h.uuidLinkage)) {
      throw new DiskError('OPENPARENT', 'differencing image without a parent UUID', { path: this.path, struct: 'VdiHeader', field: 'uuidLinkage', found: uuidToText(NULL_UUID) });
    }
    return { hint: '', format: 'vdi', parentId: uuidToText(this.h.uuidLinkage), searchByIdentity: true };
  }

  identity(): string {
    return uuidToText(this.h.uuidCreate);
  }

  async setIdentity(id: string): Promise<void> {
    this.checkWritable();
    this.h.uuidCreate = parseUuid(id, this.path, 'uuidCreate');
    await this.writeHeader();
  }

  /**
   * Link this image to another parent (rebase, commit, merge) or make it a base. A link sets
   * uuidLinkage to the parent's creation UUID and uuidParentModify to the parent's modification
   * UUID as the chain layer read it from the parent (`link.parent.record`); a normal or
   * undo image becomes a differencing image. No link: type 1 (normal dynamic) with null
   * link and parent-modify UUIDs, the only base form VirtualBox and QEMU both accept.
   */
  async setBacking(link: BackingChange | undefined): Promise<void> {
    this.checkWritable();
    if (link === undefined) {
      if (this.h.type === TYPE_DIFF || this.h.type === TYPE_UNDO) this.h.type = TYPE_NORMAL;
      this.h.uuidLinkage = Buffer.from(NULL_UUID);
      this.h.uuidParentModify = Buffer.from(NULL_UUID);
      await this.writeHeader();
      return;
    }
    if (this.h.type === TYPE_FIXED) {
      throw new DiskError('NOTSUPPORTED', 'a fixed VDI image cannot become a differencing image', { path: this.path, struct: 'VdiHeader', field: 'type', found: 'fixed' });
    }
    const linkage = parseUuid(link.parentId, this.path, 'uuidLinkage');
    let parentModify: Buffer | undefined;
    const record = link.parent?.format === 'vdi' ? link.parent.record : undefined;
    if (record && typeof record.uuidCreate === 'string' && typeof record.uuidModify === 'string') {
      const create = uuidFromText(record.uuidCreate);
      const modify = uuidFromText(record.uuidModify);
      if (create && modify && create.equals(linkage)) parentModify = modify;
    }
    // the parent could not be read: keep what we had for the same parent, else record none
    parentModify ??= linkage.equals(this.h.uuidLinkage) ? this.h.uuidParentModify : Buffer.from(NULL_UUID);
    this.h.type = TYPE_DIFF;
    this.h.uuidLinkage = linkage;
    this.h.uuidParentModify = parentModify;
    await this.writeHeader();
  }

  /**
   * What a child records about this image (VDCreateDiff): creation and modification UUIDs, and
   * the disk size, block size and LCHS geometry a child copies.
   */
  linkRecord(): LinkRecord {
    const h = this.h;
    return {
      uuidCreate: uuidToText(h.uuidCreate),
      uuidModify: uuidToText(h.uuidModify),
      cbDisk: h.cbDisk.toString(),
      cbBlock: h.cbBlock,
      ...(this.kind === 'v1+' ? { lchsCylinders: h.lchsCylinders, lchsHeads: h.lchsHeads, lchsSectors: h.lchsSectors } : {}),
    };
  }

  /** Every entry FREE, cBlocksAllocated 0, the file cut back to the data offset (map first, then header, then truncate). */
  async makeEmpty(): Promise<void> {
    this.checkWritable();
    if (this.h.type === TYPE_FIXED) throw new DiskError('NOTSUPPORTED', 'a fixed VDI image cannot be emptied', { path: this.path, struct: 'VdiHeader', field: 'type', found: 'fixed' });
    if (!this.modifyRenewed) await this.renewModify();
    this.map.fill(BLOCK_FREE);
    const chunkEntries = 256 * 1024;
    for (let i = 0; i < this.map.length; i += chunkEntries) await this.writeMapSpan(i, Math.min(this.map.length, i + chunkEntries));
    this.h.cBlocksAllocated = 0;
    this.nextIndex = 0;
    await this.writeHeader();
    await this.store.flush();
    await this.store.truncate(this.h.offData);
  }

  // ------------------------------------------------------------------ I/O

  private fileOffset(physical: number, within: number): number {
    return this.h.offData + physical * this.stride + this.h.cbBlockExtra + within;
  }

  read(into: Buffer, offset: number): Promise<void> {
    return planRead(into, offset, {
      unit: this.h.cbBlock,
      locate: (b) => {
        const e = this.map[b]!;
        return e >= BLOCK_ZERO ? ZEROS : this.fileOffset(e, 0);
      },
      readFile: (part, at) => this.store.readInto(part, at),
    });
  }

  async write(data: Buffer, offset: number): Promise<void> {
    this.checkWritable();
    if (!this.modifyRenewed) await this.renewModify();
    const bs = this.h.cbBlock;
    const direct: Promise<void>[] = [];
    const fresh: { block: number; buf: Buffer }[] = [];
    const zeroed: number[] = [];
    let pos = 0;
    while (pos < data.length) {
      const at = offset + pos;
      const b = Math.floor(at / bs);
      const within = at - b * bs;
      const n = Math.min(bs - within, data.length - pos);
      const chunk = data.subarray(pos, pos + n);
      const e = this.map[b]!;
      if (e < BLOCK_ZERO) {
        direct.push(this.store.write(this.fileOffset(e, within), chunk));
      } else {
        // FREE or ZERO: the rest of the block reads as zeros here (a differencing image gets
        // whole blocks from the chain layer, which copies the parent's bytes around the write)
        const whole = within === 0 && n === bs;
        if (isZero(chunk) && this.h.type !== TYPE_FIXED) {
          if (e !== BLOCK_ZERO) zeroed.push(b);
        } else if (whole) {
          fresh.push({ block: b, buf: chunk });
        } else {
          const buf = Buffer.alloc(bs);
          chunk.copy(buf, within);
          fresh.push({ block: b, buf });
        }
      }
      pos += n;
    }
    await Promise.all(direct);
    if (fresh.length > 0) await this.allocate(fresh);
    if (zeroed.length > 0) {
      for (const b of zeroed) this.map[b] = BLOCK_ZERO;
      await this.writeMapEntries(zeroed);
    }
  }

  /** New blocks: data at the end of the data area, then their map entries, then the header count. */
  private async allocate(fresh: { block: number; buf: Buffer }[]): Promise<void> {
    const first = this.nextIndex;
    if (first + fresh.length > Math.min(this.h.cBlocks, BLOCK_ZERO)) {
      throw new DiskError('NOSPACE', 'the data area is full (more physical blocks than the map has entries)', { path: this.path, field: 'cBlocksAllocated', found: first });
    }
    const extra = this.h.cbBlockExtra;
    const bufs: Buffer[] = [];
    for (const f of fresh) {
      if (extra > 0) bufs.push(Buffer.alloc(extra));
      bufs.push(f.buf);
    }
    await this.store.writev(this.h.offData + first * this.stride, bufs);
    fresh.forEach((f, i) => (this.map[f.block] = first + i));
    await this.writeMapEntries(fresh.map((f) => f.block));
    this.nextIndex = first + fresh.length;
    this.h.cBlocksAllocated = this.nextIndex;
    await this.writeHeader();
  }

  /** Write the map entries of `blocks` (ascending), one write per run of neighbouring entries. */
  private async writeMapEntries(blocks: number[]): Promise<void> {
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

  private async writeMapSpan(from: number, to: number): Promise<void> {
    await this.store.write(this.h.offBlocks + from * 4, u32Bytes(this.map, from, to));
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const out: BlockExtent[] = [];
    const bs = this.h.cbBlock;
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const b = Math.floor(pos / bs);
      const n = Math.min((b + 1) * bs, end) - pos;
      const e = this.map[b]!;
      const state: BlockState = e === BLOCK_FREE ? 'unallocated' : e === BLOCK_ZERO ? 'zero' : 'data';
      const last = out[out.length - 1];
      if (last && last.state === state) last.length += n;
      else out.push({ offset: pos, length: n, state });
      pos += n;
    }
    return out;
  }

  async flush(): Promise<void> {
    await this.store.flush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    let first: unknown;
    try {
      if (!this.readOnly) await this.store.flush();
    } catch (err) {
      first = err;
    }
    try {
      await this.store.close();
    } catch (err) {
      first ??= err;
    }
    if (first) throw first;
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
    this.checkWritable();
    if (!this.modifyRenewed) await this.renewModify();
    const bs = this.h.cbBlock;
    const end = offset + length;
    const diff = this.h.type === TYPE_DIFF;
    const fixed = this.h.type === TYPE_FIXED;
    const drop: number[] = [];
    for (let b = Math.floor(offset / bs); b * bs < end; b++) {
      const from = Math.max(offset, b * bs);
      const blockEnd = Math.min((b + 1) * bs, this.capacity);
      const to = Math.min(end, blockEnd);
      const e = this.map[b]!;
      const whole = from === b * bs && to === blockEnd;
      if (whole && !fixed) {
        if (e < BLOCK_ZERO || (diff && e === BLOCK_FREE)) drop.push(b);
      } else if (e < BLOCK_ZERO) {
        await this.writeZeros(this.fileOffset(e, from - b * bs), to - from);
      }
    }
    await this.dropBlocks(drop);
  }

  /**
   * Drop every allocated block that reads as zeros, close up the data area and cut the file.
   * Fixed images have no spare blocks to give back (NOTSUPPORTED, as in VirtualBox).
   */
  async compact(opts: InPlaceOptions = {}): Promise<InPlaceResult> {
    this.checkWritable();
    if (this.h.type === TYPE_FIXED) throw new DiskError('NOTSUPPORTED', 'a fixed VDI image cannot be compacted', { path: this.path, struct: 'VdiHeader', field: 'type', found: 'fixed' });
    const fileBytesBefore = await this.store.size();
    const buf = Buffer.alloc(this.h.cbBlock);
    const zero: number[] = [];
    for (let b = 0; b < this.map.length; b++) {
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: this.path }, { cause: opts.signal.reason });
      const e = this.map[b]!;
      if (e < BLOCK_ZERO) {
        await this.store.readInto(buf, this.fileOffset(e, 0));
        if (isZero(buf)) zero.push(b);
      }
      opts.onProgress?.(b + 1, this.map.length);
    }
    // the entries change but not what the disk reads: uuidModify stays (children stay valid)
    await this.dropBlocks(zero);
    return { fileBytesBefore, fileBytesAfter: await this.store.size() };
  }

  /**
   * Defragment (NOTES.md "Defragment"): the allocated blocks put in virtual order, the one with
   * the lowest virtual index in slot 0, and so on; the data area stays dense and the file is cut
   * after the last block. The permutation from slots to ranks is walked cycle by cycle with ONE
   * scratch slot, n = cBlocksAllocated, right after the data area: the first occupant of a
   * cycle is copied there (flush, entry, flush), which empties its slot; the block that belongs
   * in an empty slot is copied in (flush, entry, flush), which empties the slot it came from;
   * the scratch copy closes the cycle. Every entry always points at a complete copy and no slot
   * is written while an entry names it, so a kill never changes what the disk reads, and the
   * count never changes (every step re-points one entry), so it always equals the entries.
   * During a cycle the scratch slot is in use and one slot below it is empty: a hole (check: a
   * leak; the read-write open asks for a repair, as after a killed compact). The scratch index
   * must be below cBlocks (QEMU's check and our open call a larger one corrupt), so a full image
   * cannot move a block: a fixed image (every block allocated, map i = i from creation; VirtualBox
   * never reorders one and refuses to compact it) is refused, as is a full dynamic image that is
   * out of order; one already in order has nothing to do.
   */
  async defragment(opts: InPlaceOptions = {}): Promise<InPlaceResult> {
    this.checkWritable();
    const where = { path: this.path, struct: 'VdiHeader' };
    if (this.h.type === TYPE_FIXED) throw new DiskError('NOTSUPPORTED', 'a fixed VDI image cannot be defragmented (every block is allocated in virtual order when it is created)', { ...where, field: 'type', found: 'fixed' });
    const fileBytesBefore = await this.store.size();
    const order: number[] = [];
    for (let b = 0; b < this.map.length; b++) if (this.map[b]! < BLOCK_ZERO) order.push(b);
    const n = order.length;
    // the read-write open made the data area dense with the count equal to the entries
    if (n !== this.nextIndex) throw new DiskError('NEEDSREPAIR', 'the block map and cBlocksAllocated disagree: check -r first', { ...where, field: 'cBlocksAllocated', expected: n, found: this.nextIndex });
    const owner = new Int32Array(n);
    for (const b of order) owner[this.map[b]!] = b;
    const inOrder = order.every((b, r) => this.map[b] === r);
    if (!inOrder && n >= this.h.cBlocks) {
      throw new DiskError('NOTSUPPORTED', 'every block of this image is allocated: no spare block index for a crash-safe move (convert the image instead)', { ...where, field: 'cBlocksAllocated', found: n, expected: `< ${this.h.cBlocks}` });
    }
    const scratch = n;
    const buf = Buffer.alloc(this.stride);
    let moved = 0;
    const move = async (v: number, to: number) => {
      await this.store.readInto(buf, this.h.offData + this.map[v]! * this.stride);
      await this.store.write(this.h.offData + to * this.stride, buf);
      await this.store.flush();
      this.map[v] = to;
      await this.writeMapSpan(v, v + 1);
      await this.store.flush();
      moved++;
    };
    opts.onProgress?.(0, n);
    let cancelled = false;
    for (let s = 0; s < n; s++) {
      if (owner[s] !== order[s]) {
        // between cycles the scratch slot is free: the only safe place to stop
        if (opts.signal?.aborted) {
          cancelled = true;
          break;
        }
        const first = owner[s]!;
        await move(first, scratch);
        for (let hole = s; ; ) {
          const v = order[hole]!;
          const from = this.map[v]!;
          await move(v, hole);
          owner[hole] = v;
          if (v === first) break;
          hole = from;
        }
      }
      opts.onProgress?.(s + 1, n);
    }
    const end = this.h.offData + n * this.stride;
    if ((await this.store.size()) > end) {
      await this.store.truncate(end);
      await this.store.flush();
    }
    if (cancelled) throw new DiskError('CANCELLED', undefined, { path: this.path }, { cause: opts.signal!.reason });
    return { fileBytesBefore, fileBytesAfter: await this.store.size(), moved };
  }

  private async writeZeros(at: number, length: number): Promise<void> {
    const z = Buffer.alloc(Math.min(length, 1024 * 1024));
    for (let done = 0; done < length; done += z.length) await this.store.write(at + done, z.subarray(0, Math.min(z.length, length - done)));
  }

  /**
   * Crash-safe order (NOTES.md "Compact and discard"). QEMU's check (and ours) calls any
   * difference between cBlocksAllocated and the allocated entries a corruption, so the count and
   * the entries change in ONE write: 1. the dropped entries FREE/ZERO and the new count, written
   * as a single write from the header to the last changed entry (the bytes between are read and
   * written back unchanged), flush: their slots become holes, a leak; 2. for each hole from the
   * lowest, the highest live block copied into it, flush, then its entry, flush (the count does
   * not change: the same blocks stay allocated); 3. the file cut after the last block only when
   * no entry points there any more (a kill before it leaves a trailing leak).
   * Why one write is enough: a fatal signal stops a write only between pages, and the header
   * and the first 896 entries of a map right after the header (QEMU's layout) share page 0; a
   * map further out (VirtualBox's, at 1 MiB) makes the write longer, so a kill landing inside
   * the copy itself could still split it (the count then differs from the entries; a repair or
   * the next read-write open re-derives it). Between steps 1 and 2 the data area has holes and
   * cBlocksAllocated is below the highest used slot + 1: QEMU's allocator would reuse a live
   * slot, which is why vdkit's own read-write open refuses such an image (NEEDSREPAIR) until a
   * repair or another compact closes the holes.
   */
  private async dropBlocks(blocks: number[]): Promise<void> {
    if (blocks.length > 0) {
      const mark = this.h.type === TYPE_DIFF ? BLOCK_ZERO : BLOCK_FREE;
      for (const b of blocks) this.map[b] = mark;
      let allocated = 0;
      for (let i = 0; i < this.map.length; i++) if (this.map[i]! < BLOCK_ZERO) allocated++;
      this.h.cBlocksAllocated = allocated;
      await this.writeHeaderAndEntries(blocks.reduce((m, b) => Math.max(m, b), 0));
      await this.store.flush();
    }
    const slots = Math.max(this.nextIndex, 0);
    const owner = new Int32Array(slots).fill(-1);
    let used = 0;
    for (let i = 0; i < this.map.length; i++) {
      const e = this.map[i]!;
      if (e < BLOCK_ZERO) {
        owner[e] = i;
        used++;
      }
    }
    let top = slots - 1;
    const buf = Buffer.alloc(this.stride);
    for (let hole = 0; hole < top; hole++) {
      if (owner[hole]! >= 0) continue;
      while (top > hole && owner[top]! < 0) top--;
      if (top <= hole) break;
      const v = owner[top]!;
      await this.store.readInto(buf, this.h.offData + top * this.stride);
      await this.store.write(this.h.offData + hole * this.stride, buf);
      await this.store.flush();
      this.map[v] = hole;
      await this.writeMapSpan(v, v + 1);
      await this.store.flush();
      owner[hole] = v;
      owner[top] = -1;
      top--;
    }
    // only when the count was already off before (step 1 writes it otherwise)
    if (this.h.cBlocksAllocated !== used) {
      this.h.cBlocksAllocated = used;
      await this.writeHeader();
      await this.store.flush();
    }
    this.nextIndex = used;
    const end = this.h.offData + used * this.stride;
    if ((await this.store.size()) > end) {
      await this.store.truncate(end);
      await this.store.flush();
    }
  }

  /** The header and map entries 0..last in one write (see dropBlocks and writeHeaderAndMap). */
  private async writeHeaderAndEntries(last: number): Promise<void> {
    await writeHeaderAndMap(this.store, this.kind, this.h, this.map, last);
  }

  // ------------------------------------------------------------------ resize

  /**
   * Grow past the room before offData: the first k data blocks (k * stride >= the new map)
   * are copied after the last one, flush, their entries pointed at the copies, flush (the old
   * layout now has holes at its start: a leak, cBlocksAllocated still the count of entries);
   * the new map, every index minus k, written over those first k slots, flush; then one header
   * write moves offBlocks there and offData k blocks on. The copies must keep indices below the
   * old cBlocks (QEMU and vdkit call a larger entry corruption), so a full image (every fixed
   * one) cannot do it: NOTSUPPORTED.
   */
  private async relocateMap(newC: number, newCapacity: number): Promise<void> {
    const h = this.h;
    const oldC = h.cBlocks;
    const n = this.nextIndex;
    const k = Math.max(1, ceilDiv(newC * 4, this.stride));
    const moving = Math.min(k, n);
    const base = Math.max(n, k);
    if (h.type === TYPE_FIXED || (moving > 0 && base + moving > oldC)) {
      throw new DiskError('NOTSUPPORTED', 'the larger block map does not fit before the data area, and the data blocks in its way cannot move (the image is full or fixed): convert it to resize', { path: this.path, struct: 'VdiHeader', field: 'offData', expected: `>= ${h.offBlocks + newC * 4}`, found: h.offData });
    }
    const owner = new Map<number, number>();
    for (let b = 0; b < oldC; b++) if (this.map[b]! < moving) owner.set(this.map[b]!, b);
    const buf = Buffer.alloc(this.stride);
    for (let i = 0; i < moving; i++) {
      await this.store.readInto(buf, h.offData + i * this.stride);
      await this.store.write(h.offData + (base + i) * this.stride, buf);
    }
    await this.store.flush();
    if (owner.size > 0) {
      for (const [i, b] of owner) this.map[b] = base + i;
      await this.writeMapEntries([...owner.values()]);
      await this.store.flush();
    }
    const next = new Uint32Array(newC).fill(BLOCK_FREE);
    for (let b = 0; b < oldC; b++) {
      const e = this.map[b]!;
      next[b] = e < BLOCK_ZERO ? e - k : e;
    }
    const offBlocks = h.offData;
    await this.store.write(offBlocks, u32Bytes(next, 0, newC));
    await this.store.flush();
    h.offBlocks = offBlocks;
    h.offData = offBlocks + k * this.stride;
    h.cbDisk = BigInt(newCapacity);
    h.cBlocks = newC;
    await this.writeHeader();
    await this.store.flush();
  }

  /**
   * Resize in place (NOTES.md "Resize"); closes the image. The header (cbDisk, cBlocks,
   * cBlocksAllocated: one sector) is the switch and is written last, so a killed resize leaves
   * the old disk or the new one.
   * - Grow: the new map entries first (FREE; a fixed image gets zeroed blocks at the end of the
   *   data area first, then entries naming them), flush, then the header. A map that no longer
   *   fits before offData moves into the start of the data area first (relocateMap).
   * - Shrink: the blocks past the new end dropped first (the data area closed up as a discard
   *   does; a fixed image needs them in the last slots already), then the header, then the file
   *   cut after the last block.
   */
  async resize(newCapacity: number): Promise<void> {
    try {
      this.checkWritable();
      const where = { path: this.path, struct: 'VdiHeader', field: 'cbDisk', found: newCapacity };
      if (this.h.type === TYPE_DIFF) throw new DiskError('NOTSUPPORTED', 'a differencing VDI keeps its parent\'s size: resize the base and create the child again', { ...where, field: 'type', found: 'differencing' });
      if (newCapacity <= 0 || newCapacity % SECTOR !== 0 || newCapacity > MAX_DISK_BYTES) throw new DiskError('INVAL', 'a VDI size is a whole number of sectors up to 4 PiB - 3 MiB', { ...where, expected: `512..${MAX_DISK_BYTES}` });
      const oldC = this.h.cBlocks;
      const newC = ceilDiv(newCapacity, this.h.cbBlock);
      if (newC > MAX_BLOCKS) throw new DiskError('INVAL', 'too many blocks', { ...where, field: 'cBlocks', expected: `<= ${MAX_BLOCKS}`, found: newC });
      const fixed = this.h.type === TYPE_FIXED;
      // a stored block that holds the end keeps bytes past it: zeros there while they lie past
      // the end (grow: the old end, before the switch; shrink: the new end, after it), so that
      // they cannot reappear when the disk grows again, and a stop shows the old or new disk
      const shrinking = newCapacity < this.capacity;
      if (!shrinking) await this.zeroPastEnd(this.capacity);
      if (newC > oldC) {
        if (this.h.offBlocks + newC * 4 > this.h.offData) {
          await this.relocateMap(newC, newCapacity);
          return;
        }
        const add = newC - oldC;
        const ext = new Uint32Array(add).fill(BLOCK_FREE);
        if (fixed) {
          const n = this.nextIndex;
          const end = this.h.offData + n * this.stride;
          // bytes past the data area are a leak nothing names: cut them so the new blocks read zeros
          if ((await this.store.size()) > end) await this.store.truncate(end);
          await this.store.truncate(end + add * this.stride);
          await this.store.flush();
          for (let i = 0; i < add; i++) ext[i] = n + i;
          this.h.cBlocksAllocated = n + add;
        }
        await this.store.write(this.h.offBlocks + oldC * 4, u32Bytes(ext, 0, add));
        await this.store.flush();
      } else if (newC < oldC) {
        if (fixed) {
          for (let i = 0; i < oldC; i++) {
            if ((i < newC) !== (this.map[i]! < newC)) throw new DiskError('NOTSUPPORTED', 'the blocks of this fixed image past the new end are not its last ones: convert it to shrink', { ...where, field: `blockMap[${i}]`, found: this.map[i] });
          }
          this.h.cBlocksAllocated = newC;
        } else {
          // the entries past the new end leave the map with the header write below (the switch:
          // size, block count and allocated count in one sector); their slots become holes
          // that dropBlocks closes after it
          for (let i = newC; i < oldC; i++) this.map[i] = BLOCK_FREE;
          let allocated = 0;
          for (let i = 0; i < newC; i++) if (this.map[i]! < BLOCK_ZERO) allocated++;
          this.h.cBlocksAllocated = allocated;
        }
      }
      this.h.cbDisk = BigInt(newCapacity);
      this.h.cBlocks = newC;
      await this.writeHeader();
      await this.store.flush();
      if (shrinking) await this.zeroPastEnd(newCapacity);
      if (newC < oldC) {
        if (fixed) {
          await this.store.truncate(this.h.offData + this.h.cBlocksAllocated * this.stride);
          await this.store.flush();
        } else {
          await this.dropBlocks([]);
        }
      }
    } finally {
      await this.close();
    }
  }

  /** zeros from `end` to the end of its block when that block is stored here, flushed */
  private async zeroPastEnd(end: number): Promise<void> {
    const bs = this.h.cbBlock;
    const within = end % bs;
    if (within === 0) return;
    const e = this.map[Math.floor(end / bs)];
    if (e === undefined || e >= BLOCK_ZERO) return;
    await this.writeZeros(this.fileOffset(e, within), bs - within);
    await this.store.flush();
  }

  // ------------------------------------------------------------------ check

  /**
   * Consistency check of this file (check.ts). An open image already passed the map checks of
   * the open, so what is left to find here is counts, leaks and parent UUIDs; after a repair
   * the header and map are read again.
   */
  async check(opts: CheckOptions): Promise<CheckReport> {
    if (opts.repair && !opts.dryRun) this.checkWritable();
    const report = await checkVdiStore(this.store, this.path, opts);
    if (report.findings.some((f) => f.repaired)) {
      const p = await parse(this.store, this.path);
      this.h = p.h;
      this.map.set(p.map);
      this.nextIndex = p.h.cBlocksAllocated;
    }
    return report;
  }

  // ------------------------------------------------------------------ header

  private checkWritable(): void {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
  }

  /** VirtualBox's "first modification": a new uuidModify, saved before the data changes. */
  private async renewModify(): Promise<void> {
    this.h.uuidModify = newUuid();
    await this.writeHeader();
    this.modifyRenewed = true;
  }

  /** The header (not the pre-header) rewritten in place: 0x180 bytes for v1, 0x190 for v1+. */
  private async writeHeader(): Promise<void> {
    const buf = this.kind === 'v1+' ? VdiHeaderV1Plus.encode(this.h) : VdiHeaderV1.encode(this.h as unknown as Parameters<typeof VdiHeaderV1.encode>[0]);
    await this.store.write(PRE_HEADER_SIZE, buf.subarray(PRE_HEADER_SIZE));
  }

  metadataKeys(): string[] {
    return METADATA_KEYS.filter((k) => this.readMetadata(k) !== undefined);
  }

  readMetadata(key: string): string | undefined {
    const h = this.h;
    switch (key) {
      case 'comment': {
        const nul = h.comment.indexOf(0);
        return h.comment.subarray(0, nul < 0 ? h.comment.length : nul).toString('utf8');
      }
      case 'uuid':
        return uuidToText(h.uuidCreate);
      case 'modificationUuid':
        return uuidToText(h.uuidModify);
      case 'parentUuid':
        return isNullUuid(h.uuidLinkage) ? undefined : uuidToText(h.uuidLinkage);
      case 'parentModificationUuid':
        return isNullUuid(h.uuidParentModify) ? undefined : uuidToText(h.uuidParentModify);
      case 'geometry.cylinders':
        return this.kind === 'v1+' ? String(h.lchsCylinders) : undefined;
      case 'geometry.heads':
        return this.kind === 'v1+' ? String(h.lchsHeads) : undefined;
      case 'geometry.sectors':
        return this.kind === 'v1+' ? String(h.lchsSectors) : undefined;
      case 'type':
        return this.type;
      default:
        return undefined;
    }
  }

  async writeMetadata(key: string, value: string): Promise<void> {
    this.checkWritable();
    const where = { path: this.path, field: key, found: value };
    const h = this.h;
    switch (key) {
      case 'type':
        throw new DiskError('NOTSUPPORTED', 'metadata key type is read-only (it follows from create, rebase and merge)', where);
      case 'comment': {
        const b = Buffer.from(value, 'utf8');
        if (b.length > 255 || b.includes(0)) throw new DiskError('INVAL', 'comment must be at most 255 bytes of UTF-8 without NUL', { ...where, expected: '<= 255 bytes', found: b.length });
        const c = Buffer.alloc(256);
        b.copy(c);
        h.comment = c;
        break;
      }
      case 'uuid':
        h.uuidCreate = parseUuid(value, this.path, key);
        break;
      case 'modificationUuid':
        h.uuidModify = parseUuid(value, this.path, key);
        break;
      case 'parentUuid':
      case 'parentModificationUuid': {
        if (h.type !== TYPE_DIFF) throw new DiskError('NOTSUPPORTED', `${key} can only be set on a differencing image (link a base with rebase)`, where);
        const u = parseUuid(value, this.path, key);
        if (key === 'parentUuid') h.uuidLinkage = u;
        else h.uuidParentModify = u;
        break;
      }
      case 'geometry.cylinders':
      case 'geometry.heads':
      case 'geometry.sectors': {
        const max = key === 'geometry.cylinders' ? 1024 : key === 'geometry.heads' ? 255 : 63;
        if (!/^\d{1,10}$/.test(value) || Number(value) > max) throw new DiskError('INVAL', `LCHS ${key.slice(9)} must be 0..${max} (0: not set)`, { ...where, expected: `0..${max}` });
        if (this.kind !== 'v1+') this.upgradeHeader();
        const n = Number(value);
        if (key === 'geometry.cylinders') h.lchsCylinders = n;
        else if (key === 'geometry.heads') h.lchsHeads = n;
        else h.lchsSectors = n;
        break;
      }
      default:
        throw new DiskError('INVAL', `unknown VDI metadata key (known: ${METADATA_KEYS.join(', ')})`, where);
    }
    await this.writeHeader();
  }

  /** v1 -> v1+ (as VirtualBox does on a read-write open): room for the LCHS geometry. */
  private upgradeHeader(): void {
    if (this.h.offBlocks < PRE_HEADER_SIZE + HEADER_V1PLUS_SIZE) {
      throw new DiskError('NOTSUPPORTED', 'no room for a v1+ header (LCHS geometry) before the block map', { path: this.path, struct: 'VdiHeader', field: 'cbHeader', found: this.h.cbHeader });
    }
    this.kind = 'v1+';
    this.h.cbHeader = HEADER_V1PLUS_SIZE;
    this.h.lchsCylinders = 0;
    this.h.lchsHeads = 0;
    this.h.lchsSectors = 0;
    this.h.lchsSectorSize = SECTOR;
  }

  async info(): Promise<DiskInfo> {
    const h = this.h;
    let allocatedBytes = 0;
    for (const r of await this.blockStatus(0, this.capacity)) if (r.state === 'data') allocatedBytes += r.length;
    const geometry: Geometry | undefined = this.kind === 'v1+' && h.lchsCylinders > 0 && h.lchsHeads > 0 && h.lchsSectors > 0 ? { cylinders: h.lchsCylinders, heads: h.lchsHeads, sectors: h.lchsSectors } : undefined;
    const parent = this.h.type === TYPE_DIFF && !isNullUuid(h.uuidLinkage) ? uuidToText(h.uuidLinkage) : undefined;
    return {
      format: 'vdi',
      type: this.type,
      capacity: this.capacity,
      sectors: Math.floor(this.capacity / SECTOR),
      geometry,
      numLinks: 1,
      parent,
      cid: this.identity(),
      parentCid: parent,
      uuid: this.identity(),
      version: this.kind === 'v0' ? 0 : 1,
      extents: [{ path: this.path, type: this.type.toUpperCase(), access: this.readOnly ? 'RDONLY' : 'RW', length: this.capacity, virtualOffset: 0, fileOffset: h.offData }],
      allocatedBytes,
      fileSize: await this.store.size(),
      diskSize: (await this.namespace.stat(this.path)).allocated ?? (await this.store.size()),
      readOnly: this.readOnly,
      files: [this.path],
      ...(this.warnings.length > 0 ? { warnings: [...this.warnings] } : {}),
    };
  }
}

// ------------------------------------------------------------------ parsing

function parseUuid(text: string, path: string, field: string): Buffer {
  const u = uuidFromText(text);
  if (!u) throw new DiskError('INVAL', 'not a UUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)', { path, field, found: text });
  if (isNullUuid(u)) throw new DiskError('INVAL', 'the null UUID is not allowed here', { path, field, found: text });
  return u;
}

/** A header that passed every field check; the block map not yet read (check.ts reads it leniently). */
export interface ParsedHeader {
  h: VdiHeaderValue;
  kind: HeaderKind;
  capacity: number;
  fileSize: number;
}

async function parse(store: ByteStore, path: string): Promise<Parsed> {
  const { h, kind, capacity, fileSize } = await parseHeader(store, path);
  const bad = (code: ErrorCode, field: string, message: string, expected?: unknown, found?: unknown) => new DiskError(code, message, { path, struct: 'VdiHeader', field, expected, found });
  if (h.cBlocksAllocated > h.cBlocks) throw bad('CORRUPT', 'cBlocksAllocated', 'more blocks allocated than the disk has', `<= ${h.cBlocks}`, h.cBlocksAllocated);
  const m = await parseMap(store, path, h, fileSize);
  return { h, kind, capacity, ...m };
}

/**
 * The pre-header and header, every field checked (vdi.md §12) except cBlocksAllocated, which
 * a check repairs rather than refuses.
 */
/** the longest header-plus-map write writeHeaderAndMap makes in one piece */
const ONE_WRITE_MAX = 64 * 1024 * 1024;

export async function parseHeader(store: ByteStore, path: string): Promise<ParsedHeader> {
  const fileSize = await store.size();
  const bad = (code: ErrorCode, field: string, message: string, expected?: unknown, found?: unknown) => new DiskError(code, message, { path, struct: 'VdiHeader', field, expected, found });

  if (fileSize < PRE_HEADER_SIZE) throw bad('INVALIDDISK', 'signature', 'file is too short to be a VDI image', `>= ${PRE_HEADER_SIZE} bytes`, fileSize);
  const head = await store.readZeroPadded(0, Math.min(fileSize, PRE_HEADER_SIZE + HEADER_V1PLUS_SIZE));
  const pre = VdiPreHeader.decode(head, 0, path);
  if (pre.signature !== VDI_SIGNATURE) throw bad('INVALIDDISK', 'signature', 'not a VDI image (bad signature)', hex(VDI_SIGNATURE), hex(pre.signature));

  let h: VdiHeaderValue;
  let kind: HeaderKind;
  if (pre.version === VDI_VERSION_LEGACY) {
    kind = 'v0';
    if (fileSize < VdiHeaderV0.size) throw bad('CORRUPT', 'cbHeader', 'file truncated inside the v0 header', `>= ${VdiHeaderV0.size} bytes`, fileSize);
    const v0 = VdiHeaderV0.decode(head, 0, path);
    h = {
      ...v0,
      cbHeader: 0,
      offBlocks: VdiHeaderV0.size,
      offData: VdiHeaderV0.size + 4 * v0.cBlocks,
      dummy: 0,
      cbBlockExtra: 0,
      uuidParentModify: Buffer.from(NULL_UUID),
      lchsCylinders: 0,
      lchsHeads: 0,
      lchsSectors: 0,
      lchsSectorSize: SECTOR,
    };
  } else {
    if (pre.version >>> 16 !== 1) {
      throw bad('UNSUPPORTEDDISKVERSION', 'version', 'unsupported VDI version', '1.x (0x0001xxxx) or legacy 0x00000002', `${pre.version >>> 16}.${pre.version & 0xffff}`);
    }
    if (fileSize < PRE_HEADER_SIZE + 4) throw bad('CORRUPT', 'cbHeader', 'file truncated inside the header', `>= ${PRE_HEADER_SIZE + HEADER_V1_SIZE} bytes`, fileSize);
    const cbHeader = head.readUInt32LE(PRE_HEADER_SIZE);
    if (cbHeader < HEADER_V1_SIZE) throw bad('CORRUPT', 'cbHeader', 'header size too small', `>= 0x${HEADER_V1_SIZE.toString(16)}`, `0x${cbHeader.toString(16)}`);
    kind = cbHeader >= HEADER_V1PLUS_SIZE ? 'v1+' : 'v1';
    const need = PRE_HEADER_SIZE + (kind === 'v1+' ? HEADER_V1PLUS_SIZE : HEADER_V1_SIZE);
    if (fileSize < need) throw bad('CORRUPT', 'cbHeader', 'file truncated inside the header', `>= ${need} bytes`, fileSize);
    if (kind === 'v1+') {
      h = VdiHeaderV1Plus.decode(head, 0, path);
    } else {
      h = { ...VdiHeaderV1.decode(head, 0, path), lchsCylinders: 0, lchsHeads: 0, lchsSectors: 0, lchsSectorSize: SECTOR };
    }
  }

  // field checks (vdi.md §12), each naming its field
  if (h.type < TYPE_NORMAL || h.type > TYPE_DIFF) throw bad('CORRUPT', 'type', 'unknown image type', '1 (normal), 2 (fixed), 3 (undo) or 4 (diff)', h.type);
  if (h.flags & ~KNOWN_FLAGS) throw bad('UNSUPPORTEDFEATURE', 'flags', 'unknown image flags', 'bits of 0x301', hex(h.flags));
  if (kind === 'v1+' && h.lchsSectorSize !== SECTOR) throw bad('CORRUPT', 'lchsSectorSize', 'LCHS geometry sector size must be 512', SECTOR, h.lchsSectorSize);
  if (h.cbDisk === 0n) throw bad('CORRUPT', 'cbDisk', 'disk size is 0', '> 0', 0);
  if (h.cbDisk > BigInt(MAX_DISK_BYTES)) throw bad('CORRUPT', 'cbDisk', 'disk size is over the format limit', `<= ${MAX_DISK_BYTES} (4 PiB - 3 MiB)`, h.cbDisk);
  const cbDisk = toSafeNumber(h.cbDisk, { path, struct: 'VdiHeader', field: 'cbDisk' });
  if (!isPowerOfTwo(h.cbBlock) || h.cbBlock < MIN_BLOCK_SIZE || h.cbBlock > MAX_BLOCK_SIZE) {
    throw bad('CORRUPT', 'cbBlock', 'invalid block size', `a power of two from ${MIN_BLOCK_SIZE} to ${MAX_BLOCK_SIZE}`, h.cbBlock);
  }
  if (h.cbBlockExtra !== 0 && (!isPowerOfTwo(h.cbBlockExtra) || h.cbBlockExtra > h.cbBlock)) {
    throw bad('CORRUPT', 'cbBlockExtra', 'invalid per-block extra data size', `0 or a power of two <= ${h.cbBlock}`, h.cbBlockExtra);
  }
  const wantBlocks = ceilDiv(cbDisk, h.cbBlock);
  if (h.cBlocks === 0 || h.cBlocks !== wantBlocks) throw bad('CORRUPT', 'cBlocks', 'block count does not match the disk size', `ceil(cbDisk / cbBlock) = ${wantBlocks}`, h.cBlocks);
  if (h.cBlocks > MAX_BLOCKS) throw bad('CORRUPT', 'cBlocks', 'too many blocks', `<= ${MAX_BLOCKS}`, h.cBlocks);
  const headerEnd = kind === 'v0' ? VdiHeaderV0.size : PRE_HEADER_SIZE + (kind === 'v1+' ? HEADER_V1PLUS_SIZE : HEADER_V1_SIZE);
  if (h.offBlocks < headerEnd) throw bad('CORRUPT', 'offBlocks', 'block map overlaps the header', `>= 0x${headerEnd.toString(16)}`, `0x${h.offBlocks.toString(16)}`);
  const mapBytes = 4 * h.cBlocks;
  if (h.offData < h.offBlocks + mapBytes) throw bad('CORRUPT', 'offData', 'data area overlaps the block map', `>= ${h.offBlocks + mapBytes}`, h.offData);
  if (h.offBlocks + mapBytes > fileSize) throw bad('CORRUPT', 'offBlocks', 'block map lies past the end of the file (file truncated?)', atMost(fileSize - mapBytes), h.offBlocks);
  if (isNullUuid(h.uuidCreate)) throw bad('CORRUPT', 'uuidCreate', 'image UUID is null', 'a non-null UUID', uuidToText(h.uuidCreate));
  if (isNullUuid(h.uuidModify)) throw bad('CORRUPT', 'uuidModify', 'modification UUID is null', 'a non-null UUID', uuidToText(h.uuidModify));
  // odd sizes (VBoxManage convertfromraw) are rounded up to whole sectors, as QEMU does
  const capacity = Math.ceil(cbDisk / SECTOR) * SECTOR;
  return { h, kind, capacity, fileSize };
}

async function parseMap(store: ByteStore, path: string, h: VdiHeaderValue, fileSize: number): Promise<{ map: Uint32Array; used: number; maxIndex: number }> {
  const bad = (code: ErrorCode, field: string, message: string, expected?: unknown, found?: unknown) => new DiskError(code, message, { path, struct: 'VdiHeader', field, expected, found });
  // the map: read (bounded by the file size, checked above), then every entry checked
  const map = await readU32Array(store, h.offBlocks, h.cBlocks);
  const stride = h.cbBlock + h.cbBlockExtra;
  const fileBlocks = fileSize > h.offData ? Math.floor((fileSize - h.offData) / stride) : 0;
  let used = 0;
  let maxIndex = -1;
  for (let i = 0; i < map.length; i++) {
    const e = map[i]!;
    if (e >= BLOCK_ZERO) continue;
    if (e >= h.cBlocks) throw bad('CORRUPT', `blockMap[${i}]`, 'block map entry points past the data area', `< ${h.cBlocks} (cBlocks)`, e);
    if (e >= fileBlocks) throw bad('CORRUPT', `blockMap[${i}]`, 'block map entry points past the end of the file (file truncated?)', `< ${fileBlocks} blocks in the file`, e);
    used++;
    if (e > maxIndex) maxIndex = e;
  }
  // two entries naming one physical block: more entries than blocks in the file proves it
  // without looking further; otherwise a bitmap of the used indices finds the pair
  if (used > fileBlocks) throw bad('CORRUPT', 'blockMap', 'more allocated blocks than the file holds (entries share blocks)', `<= ${fileBlocks}`, used);
  if (used > 0) {
    const seen = new Uint8Array(Math.ceil((maxIndex + 1) / 8));
    for (let i = 0; i < map.length; i++) {
      const e = map[i]!;
      if (e >= BLOCK_ZERO) continue;
      const bit = 1 << (e & 7);
      if (seen[e >>> 3]! & bit) {
        const other = map.indexOf(e);
        throw new DiskError('CORRUPT', `two block map entries point at the same physical block (${other} and ${i})`, { path, struct: 'VdiHeader', field: `blockMap[${i}]`, found: e, other: `blockMap[${other}]` });
      }
      seen[e >>> 3]! |= bit;
    }
  }
  return { map, used, maxIndex };
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

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
