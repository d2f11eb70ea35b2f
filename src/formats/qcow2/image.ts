/**
 * qcow2 driver: one QEMU copy-on-write image (version 2 or 3) opened as an Image. This file is
 * the data path (read, write, blockStatus, discard, flush, close); the roles live beside it
 * (NOTES.md "Files") as functions over the image's state (state.ts), and the methods here that
 * are not data path only hand over to them.
 *
 * Design notes (full map in NOTES.md)
 * - Mapping: L1 (in memory) -> L2 tables (LRU cache) -> host clusters; an L2 entry is
 *   unallocated (ask the backing file), zero (flag, with or without a preallocated cluster),
 *   normal, or compressed (raw deflate, inflated into exactly one cluster). Extended L2 entries
 *   (subclusters) are read, per subcluster; images that use them open read-only.
 * - Writes go through write.ts in QEMU's crash-safe order: refcounts, data, L2, L1, frees.
 *   clusterSize is the cluster size, so the chain layer widens partial writes over clusters
 *   this image lacks and fills them from the backing chain; partial writes over zero clusters
 *   are padded with zeros here.
 * - No lazy refcounts, so the dirty bit is never set by us; a dirty image opened read-write has
 *   its refcounts rebuilt first (check.ts), as QEMU does.
 */
import { DiskError } from '../../core/errors.js';
import { appendExtent, appendMapped } from '../common/extents.js';
import type { BackingChange, BackingLink, BlockExtent, Capabilities, CheckOptions, CheckReport, DiskInfo, Image, ImageMaintenance, InPlaceOptions, MappedExtent } from '../types.js';
import { armBitmaps, bitmapOps, markDirty, storeTracked } from './bitmap-write.js';
import { backing, makeEmpty, setBacking } from './links.js';
import { dropClusters } from './maintain.js';
import { info, metadataKeys, readMetadata, writeMetadata } from './metadata.js';
import { resize } from './resize.js';
import { applySnapshot, createSnapshot, deleteSnapshot, listSnapshots } from './snapshot-write.js';
import { Qcow2State } from './state.js';
import { writeSlice } from './write.js';
import { QCOW2_CAPABILITIES } from './driver.js';


const READ_ONLY_CAPABILITIES: Capabilities = Object.freeze({ ...QCOW2_CAPABILITIES, write: 'none' });

export class Qcow2Image extends Qcow2State implements Image {
  readonly format = 'qcow2';
  readonly capabilities: Capabilities = this.readOnly ? READ_ONLY_CAPABILITIES : QCOW2_CAPABILITIES;

  // ------------------------------------------------------------------ data path

  override async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const out: BlockExtent[] = [];
    for (const s of await this.segments(offset, length)) appendExtent(out, s.offset, s.length, s.state);
    return out;
  }

  async mapStatus(offset: number, length: number): Promise<MappedExtent[]> {
    const out: MappedExtent[] = [];
    for (const s of await this.segments(offset, length)) {
      const stored = s.state === 'data' && !s.comp;
      appendMapped(out, s.offset, s.length, s.state, stored ? (this.dataFile?.path ?? this.path) : undefined, stored ? s.host : undefined);
    }
    return out;
  }

  async read(into: Buffer, offset: number): Promise<void> {
    const segs = await this.segments(offset, into.length);
    await Promise.all(
      segs.map(async (s) => {
        const dst = into.subarray(s.offset - offset, s.offset - offset + s.length);
        if (s.state !== 'data') dst.fill(0);
        else if (s.comp) {
          const cl = await this.inflate(s.comp);
          cl.copy(dst, 0, s.offset - s.comp.cluster, s.offset - s.comp.cluster + s.length);
        } else await this.readHost(dst, s.host);
      }),
    );
  }

  override async write(data: Buffer, offset: number): Promise<void> {
    await this.prepareWrite();
    if (this.bitmaps) {
      await armBitmaps.call(this);
      markDirty.call(this, offset, data.length);
    }
    const end = offset + data.length;
    for (let at = offset; at < end; ) {
      const l1i = Math.floor(at / this.span);
      const stop = Math.min(end, (l1i + 1) * this.span);
      await writeSlice.call(this, l1i, data.subarray(at - offset, stop - offset), at);
      at = stop;
    }
  }

  /**
   * Whole clusters: in a base without a backing file the L2 entry becomes 0 (unallocated);
   * in a child a v3 image gets the zero flag, a v2 image zeros written as data (v2 has no way to
   * hide the backing file otherwise). Their clusters are freed (entry first, then refcount).
   * Parts of clusters stored here get zeros written; a part of a cluster a child does not
   * store is left (the chain layer owns the backing file's bytes).
   */
  async discard(offset: number, length: number): Promise<void> {
    await this.prepareWrite();
    if (this.bitmaps) {
      await armBitmaps.call(this);
      markDirty.call(this, offset, length);
    }
    const cs = this.clusterSize;
    const end = offset + length;
    const whole: number[] = [];
    for (let c = Math.floor(offset / cs); c * cs < end; c++) {
      const from = Math.max(offset, c * cs);
      const to = Math.min(end, (c + 1) * cs, this.capacity);
      const cEnd = Math.min((c + 1) * cs, this.capacity);
      if (from === c * cs && to === cEnd) {
        whole.push(c);
        continue;
      }
      const st = await this.blockStatus(from, to - from);
      if (st.some((r) => r.state === 'data')) await this.write(Buffer.alloc(to - from), from);
    }
    if (whole.length === 0) return;
    // a data file keeps its clusters where the guest has them (a raw one must read as the
    // guest does): zeros are written there, the entries stay
    if (this.backingName !== undefined || this.dataFile) {
      // a child: the zero flag through the write path (v3), zeros as data (v2)
      const z = Buffer.alloc(cs);
      for (const c of whole) await this.write(z.subarray(0, Math.min(cs, this.capacity - c * cs)), c * cs);
      return;
    }
    const set = new Set(whole);
    await dropClusters.call(this, (e, c) => set.has(c) && (e.kind !== 'unallocated' || e.offset !== 0), 'unallocate');
  }

  override async flush(): Promise<void> {
    if (this.readOnly || this.closed) return;
    // the data before the metadata that may name it
    await this.dataFile?.store.flush();
    await this.store.flush();
  }

  override async close(): Promise<void> {
    if (this.closed) return;
    // the recorded writes stored, in_use cleared (bitmap-write.ts); the files close even if that fails
    let failed: unknown;
    if (!this.readOnly) await storeTracked.call(this).catch((err: unknown) => (failed = err));
    this.closed = true;
    try {
      if (!this.readOnly) {
        await this.dataFile?.store.flush();
        await this.store.flush();
      }
    } finally {
      await this.dataFile?.store.close().catch(() => {});
      await this.store.close();
    }
    if (failed) throw failed;
  }

  // ------------------------------------------------------------------ chain links (links.ts)

  backing(): BackingLink | undefined {
    return backing.call(this);
  }

  /** qcow2 has no identity: a child names its backing file and format only (parentLink 'name') */
  identity(): undefined {
    return undefined;
  }

  /** qcow2 stores no identity: nothing to set. */
  async setIdentity(_id: string): Promise<void> {
    this.checkWritable();
  }

  setBacking(link: BackingChange | undefined): Promise<void> {
    return setBacking.call(this, link);
  }

  makeEmpty(): Promise<void> {
    return makeEmpty.call(this);
  }

  // ------------------------------------------------------------------ metadata (metadata.ts)

  metadataKeys(): string[] {
    return metadataKeys.call(this);
  }

  readMetadata(key: string): string | undefined {
    return readMetadata.call(this, key);
  }

  writeMetadata(key: string, value: string): Promise<void> {
    return writeMetadata.call(this, key, value);
  }

  info(): Promise<DiskInfo> {
    return info.call(this);
  }

  // ------------------------------------------------------------------ maintenance

  maintenance(): ImageMaintenance {
    return {
      check: async (opts: CheckOptions): Promise<CheckReport> => {
        if (opts.repair && !opts.dryRun) this.checkWritable();
        else if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.path });
        return (await import('./check.js')).checkQcow2(this, opts);
      },
      // loaded when run: opening an image to read it does not load the relayout code
      compact: async (opts: InPlaceOptions = {}) => (await import('./compact.js')).compact.call(this, opts),
      defragment: async (opts: InPlaceOptions = {}) => (await import('./defrag.js')).defragment.call(this, opts),
      resize: (newCapacity: number) => resize.call(this, newCapacity),
      amend: async (options: Readonly<Record<string, string>>) => (await import('./amend.js')).amend.call(this, options),
      bitmaps: bitmapOps(this),
      snapshots: {
        list: () => listSnapshots.call(this),
        create: (name: string) => createSnapshot.call(this, name),
        apply: (nameOrId: string) => applySnapshot.call(this, nameOrId),
        delete: (nameOrId: string) => deleteSnapshot.call(this, nameOrId),
      },
    };
  }
}
