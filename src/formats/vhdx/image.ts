/**
 * VHDX driver: one fixed, dynamic or differencing VHDX file opened as an Image (data path here;
 * open.ts parses, state.ts holds the session; NOTES.md "Files").
 *
 * Design notes (full map in NOTES.md)
 * - Open: file identifier, both headers (CRC-32C; the valid one with the higher sequence
 *   number), the log (a pending sequence is replayed in place on a read-write open, into an
 *   in-memory overlay on a read-only one), both region tables (the first valid copy), the
 *   metadata table and items, the BAT. Everything is checked against the file size before any
 *   allocation; a refused open never writes.
 * - Session: a read-write open writes the non-current header with sequence+1 and a new
 *   FileWriteGuid before anything else; the first write of user data renews the DataWriteGuid
 *   (the identity children record) unless the caller preserves it (commit, merge, rebase).
 * - Metadata changes (BAT entries, metadata region items) are buffered and go through the log
 *   at flush()/close() and in metadata operations: flush the data, write the log entry, flush,
 *   apply in place, flush. A crash at any point leaves the old or the new metadata, never a mix.
 * - Data: new blocks go to the end of the file (1 MiB aligned), the file is extended (a hole)
 *   before the data is written, so unwritten parts of a new block read as zeros; sector bitmaps
 *   of differencing images are written in place, data first, then the bits that expose it.
 * - Block states: FULLY_PRESENT = data; PARTIALLY_PRESENT = per sector from the bitmap (set =
 *   data, clear = unallocated); ZERO = zero; NOT_PRESENT, UNDEFINED, UNMAPPED = unallocated
 *   (zeros alone, the parent's data in a chain). clusterSize is the logical sector size.
 */
import { writeBitmapped } from '../common/bitmapped-write.js';
import { VHDX_CAPABILITIES } from './driver.js';
import { appendExtent, appendSectorRuns } from '../common/extents.js';
import { oneFileInfo } from '../common/info.js';
import { unitSpans } from '../../core/ints.js';
import { DiskError } from '../../core/errors.js';
import type { Namespace } from '../../storage/namespace.js';
import type {
  BackingChange,
  BackingLink,
  BlockExtent,
  Capabilities,
  CheckOptions,
  DiskInfo,
  Image,
  ImageMaintenance,
  InPlaceOptions,
} from '../types.js';
import { guidText } from '../../binary/guid.js';
import { BITMAP, BITMAP_BLOCK_SIZE, MiB, PAYLOAD, batEntry, bitmapIndex } from './structs.js';
import { BITS, setBits, sectorRuns } from './layout.js';
import type { VhdxState } from './state.js';
import { backing, identity, setIdentity, setBacking, makeEmpty } from './links.js';
import { metadataKeys, readMetadata, writeMetadata } from './metadata.js';
import { compact, closeUp } from './compact.js';
import { defragment } from './defrag.js';
import { resize } from './resize.js';
import { check } from './check.js';


const READ_ONLY_CAPABILITIES: Capabilities = Object.freeze({ ...VHDX_CAPABILITIES, write: 'none' });

/** one fresh block a write needs */
export interface Fresh {
  b: number;
  within: number;
  chunk: Buffer;
  /** the block read as zeros before (ZERO state): it becomes FULLY_PRESENT even in a differencing image */
  fromZero: boolean;
}

export class VhdxImage implements Image {
  readonly format = 'vhdx';
  readonly capabilities: Capabilities;
  readonly clusterSize: number;

  constructor(private readonly state: VhdxState) {
    // a fixed image keeps every block allocated: nothing to drop (its blocks can still be put in order)
    const caps = state.readOnly ? READ_ONLY_CAPABILITIES : VHDX_CAPABILITIES;
    this.capabilities = state.fixed ? Object.freeze({ ...caps, compact: 'none' }) : caps;
    this.clusterSize = state.params.logicalSectorSize;
  }

  get path(): string {
    return this.state.path;
  }

  get namespace(): Namespace {
    return this.state.namespace;
  }

  get readOnly(): boolean {
    return this.state.readOnly;
  }

  get capacity(): number {
    return this.state.capacity;
  }

  get type(): string {
    return this.state.type;
  }

  // ------------------------------------------------------------------ links, metadata, maintenance (other files)

  backing(): BackingLink | undefined {
    return backing(this.state);
  }

  identity(): string {
    return identity(this.state);
  }

  setIdentity(id: string): Promise<void> {
    return setIdentity(this.state, id);
  }

  setBacking(link: BackingChange | undefined): Promise<void> {
    return setBacking(this.state, link);
  }

  makeEmpty(): Promise<void> {
    return makeEmpty(this.state);
  }

  metadataKeys(): string[] {
    return metadataKeys(this.state);
  }

  readMetadata(key: string): string | undefined {
    return readMetadata(this.state, key);
  }

  writeMetadata(key: string, value: string): Promise<void> {
    return writeMetadata(this.state, key, value);
  }

  maintenance(): ImageMaintenance {
    const state = this.state;
    return {
      compact: (opts: InPlaceOptions = {}) => compact(state, opts),
      defragment: (opts: InPlaceOptions = {}) => defragment(state, opts),
      resize: (newCapacity: number) => resize(state, newCapacity),
      check: (opts: CheckOptions) => check(state, opts),
    };
  }

  close(): Promise<void> {
    return this.state.close();
  }

  // ------------------------------------------------------------------ data path

  /**
   * Whole blocks: NOT_PRESENT in a base, PAYLOAD_BLOCK_ZERO in a differencing image (zeros, not
   * the parent), committed through the log, then the file closed up (closeUp). Parts of blocks:
   * zeros written where the block is stored; in a differencing image zeros over the whole
   * sectors of the range wherever the block is not ZERO (sector bitmaps make that exact; a
   * partial sector is left to the chain layer). A fixed image gets zeros written.
   */
  async discard(offset: number, length: number): Promise<void> {
    this.state.checkWritable();
    await this.state.beginDataWrite();
    const bs = this.state.params.blockSize;
    const ls = this.state.params.logicalSectorSize;
    const diff = this.state.params.hasParent;
    const end = offset + length;
    let dropped = false;
    for (let n = Math.floor(offset / bs); n * bs < end; n++) {
      const from = Math.max(offset, n * bs);
      const to = Math.min(end, n * bs + this.state.blockLen(n));
      const st = this.state.pState[n]!;
      if (!this.state.fixed && from === n * bs && to === n * bs + this.state.blockLen(n)) {
        const next = diff ? PAYLOAD.ZERO : PAYLOAD.NOT_PRESENT;
        if (st !== next && (diff || st === PAYLOAD.FULLY_PRESENT || st === PAYLOAD.ZERO)) {
          this.state.setPayload(n, next, 0);
          this.state.bitmaps.delete(n);
          dropped = true;
        }
      } else if (diff) {
        const a = Math.ceil(from / ls) * ls;
        const z = Math.floor(to / ls) * ls;
        if (z > a && st !== PAYLOAD.ZERO) await this.write(Buffer.alloc(z - a), a);
      } else if (st === PAYLOAD.FULLY_PRESENT) {
        await this.state.zeroFill(this.state.pOff[n]! * MiB + (from - n * bs), to - from);
      }
    }
    if (dropped) {
      await this.state.commit();
      await closeUp(this.state);
    }
  }

  async read(into: Buffer, offset: number): Promise<void> {
    const bs = this.state.params.blockSize;
    const parts: Promise<void>[] = [];
    for (const { index: n, within, pos, n: len } of unitSpans(offset, into.length, bs)) {
      const sub = into.subarray(pos, pos + len);
      const st = this.state.pState[n];
      if (st === PAYLOAD.FULLY_PRESENT) parts.push(this.state.store.readInto(sub, this.state.pOff[n]! * MiB + within));
      else if (st === PAYLOAD.PARTIALLY_PRESENT) parts.push(this.readPartial(n, sub, within));
      else sub.fill(0);
    }
    await Promise.all(parts);
  }

  private async readPartial(n: number, into: Buffer, within: number): Promise<void> {
    const ls = this.state.params.logicalSectorSize;
    const bm = await this.state.bitmap(n);
    const base = this.state.pOff[n]! * MiB;
    const end = within + into.length;
    const reads: Promise<void>[] = [];
    for (const [a, z, set] of sectorRuns(bm, Math.floor(within / ls), Math.ceil(end / ls))) {
      const from = Math.max(a * ls, within) - within;
      const to = Math.min(z * ls, end) - within;
      if (set) reads.push(this.state.store.readInto(into.subarray(from, to), base + within + from));
      else into.fill(0, from, to);
    }
    await Promise.all(reads);
  }

  async write(data: Buffer, offset: number): Promise<void> {
    this.state.checkWritable();
    await this.state.beginDataWrite();
    const bs = this.state.params.blockSize;
    const fresh: Fresh[] = [];
    for (const { index: n, within, pos, n: len } of unitSpans(offset, data.length, bs)) {
      const chunk = data.subarray(pos, pos + len);
      const st = this.state.pState[n];
      if (st === PAYLOAD.FULLY_PRESENT) await this.state.store.write(this.state.pOff[n]! * MiB + within, chunk);
      else if (st === PAYLOAD.PARTIALLY_PRESENT) await this.writePartial(n, chunk, within);
      else fresh.push({ b: n, within, chunk, fromZero: st === PAYLOAD.ZERO });
    }
    if (fresh.length > 0) await this.allocate(fresh);
  }

  /** Write into a partially present block: the data (partial sectors not stored here padded with zeros), then the bits that expose it. */
  private async writePartial(n: number, chunk: Buffer, within: number): Promise<void> {
    const bitmap = await this.state.bitmap(n);
    await writeBitmapped({ store: this.state.store, bits: BITS, bitmap, dataAt: this.state.pOff[n]! * MiB, bitmapAt: this.state.sliceOffset(n), sectorSize: this.state.params.logicalSectorSize }, chunk, within);
  }

  /**
   * New blocks at the end of the file: the file is extended first (the new blocks are holes,
   * reading as zeros), then the data and, for partially present blocks, the whole bitmap slice
   * (only the written sectors set); the BAT entries change in memory and reach the file through
   * the log at the next flush. A crash before that leaks the space and exposes nothing.
   */
  private async allocate(fresh: Fresh[]): Promise<void> {
    const bs = this.state.params.blockSize;
    const ls = this.state.params.logicalSectorSize;
    const diff = this.state.params.hasParent;
    let at = this.state.nextFree;
    const plans = fresh.map((f) => {
      const whole = f.within === 0 && f.chunk.length === this.state.blockLen(f.b);
      const state = !diff || f.fromZero || whole ? PAYLOAD.FULLY_PRESENT : PAYLOAD.PARTIALLY_PRESENT;
      return { ...f, state, offset: 0 };
    });
    const newBitmaps: number[] = [];
    for (const p of plans) {
      if (p.state !== PAYLOAD.PARTIALLY_PRESENT) continue;
      const k = Math.floor(p.b / this.state.cr);
      if (this.state.bState[k] !== BITMAP.PRESENT && !newBitmaps.includes(k)) newBitmaps.push(k);
    }
    const bitmapAt = new Map<number, number>();
    for (const k of newBitmaps) {
      bitmapAt.set(k, at);
      at += BITMAP_BLOCK_SIZE;
    }
    for (const p of plans) {
      p.offset = at;
      at += bs;
    }
    const limit = 2 ** 52;
    if (at > limit) throw new DiskError('NOSPACE', 'the VHDX file would grow past 4 PiB', { path: this.state.path, field: 'BAT' });
    if (at > this.state.fileSize) {
      await this.state.store.truncate(at);
      this.state.fileSize = at;
    }
    this.state.nextFree = at;
    for (const [k, off] of bitmapAt) {
      this.state.bState[k] = BITMAP.PRESENT;
      this.state.bOff[k] = off / MiB;
      this.state.pending.set(bitmapIndex(k, this.state.cr), batEntry(BITMAP.PRESENT, off / MiB));
    }
    const writes: Promise<void>[] = [];
    for (const p of plans) {
      writes.push(this.state.store.write(p.offset + p.within, p.chunk));
      if (p.state === PAYLOAD.PARTIALLY_PRESENT) {
        const bm = Buffer.alloc(this.state.sliceBytes);
        setBits(bm, Math.floor(p.within / ls), Math.ceil((p.within + p.chunk.length) / ls));
        writes.push(this.state.store.write(this.state.sliceOffset(p.b), bm));
        this.state.cacheBitmap(p.b, bm);
      }
    }
    await Promise.all(writes);
    for (const p of plans) this.state.setPayload(p.b, p.state, p.offset / MiB);
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const bs = this.state.params.blockSize;
    const ls = this.state.params.logicalSectorSize;
    const out: BlockExtent[] = [];
    for (const { index: n, within, pos, n: len } of unitSpans(offset, length, bs)) {
      const at = offset + pos;
      const st = this.state.pState[n];
      if (st === PAYLOAD.FULLY_PRESENT) appendExtent(out, at, len, 'data');
      else if (st === PAYLOAD.ZERO) appendExtent(out, at, len, 'zero');
      else if (st === PAYLOAD.PARTIALLY_PRESENT) appendSectorRuns(out, { bits: BITS, bitmap: await this.state.bitmap(n), sectorSize: ls }, at, within, len);
      else appendExtent(out, at, len, 'unallocated');
    }
    return out;
  }

  async flush(): Promise<void> {
    if (this.state.readOnly || this.state.closed) return;
    await this.state.commit();
    await this.state.store.flush();
  }

  async info(): Promise<DiskInfo> {
    const link = backing(this.state);
    return oneFileInfo(this, {
      links: { parent: link ? link.hint || link.hints?.[0] : undefined, cid: identity(this.state), parentCid: link?.parentId, uuid: guidText(this.state.virtualDiskId, 'le'), version: this.state.header.version },
      fileSize: this.state.fileSize,
      qemuFacts: { clusterSize: this.state.params.blockSize },
      // what this read-write open repaired (a log replayed, a region table rewritten) is still
      // said, as qcow2 says its rebuilt refcounts: VixDiskLib's warn callback and `info` report it
      warnings: this.state.findings.map((f) => (f.repaired ? `${f.message} (repaired at open)` : f.message)),
    });
  }
}
