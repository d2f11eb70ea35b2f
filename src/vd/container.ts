/**
 * VDisk: VirtualBox's HDD container (VDCreate/VDOpen/VDCreateBase/VDCreateDiff/VDClose/...) over
 * vdkit's chain layer and operations. Images are stacked one by one, image 0 the base and the
 * last the top, each with its own format and VD_OPEN_FLAGS_*; reads fall through the stack,
 * writes go to the top, the images below it stay read-only. vd/NOTES.md says what each flag
 * does and where vdkit differs from VirtualBox.
 *
 * Design notes
 * - Calls are serialised, as VD's container lock does: each public method waits for the one
 *   before it, so a reopen (setOpenFlags, stacking, closing) never races a read or a write.
 * - Each image is opened alone (openLinkIn with cowByCaller: the container does copy-on-write
 *   through a ChainImage over the stack), so formats still open from a namespace through the
 *   registry; the data path (a Disk over that ChainImage) is rebuilt whenever the stack changes.
 * - Merge closes the images, runs the commit or merge operation on the files (its own journal
 *   and crash-safe order), then opens what is left with the flags each image had.
 */
import { DiskError } from '../core/errors.js';
import { checkRange } from '../core/ints.js';
import { ChainImage, checkLink, locateParent } from '../chain/chain.js';
import { Disk, chainFormats, openLinkIn } from '../disk.js';
import { driverByName } from '../formats/registry.js';
import type { CreateOptions, Geometry, Image } from '../formats/types.js';
import type { DiskProperties, PropertyName } from '../formats/common/properties.js';
import { getProperties, setProperties, settableProperties } from '../ops/properties.js';
import { childCreateOptions } from '../ops/child.js';
import { hostFiles } from '../storage/file.js';
import type { Namespace } from '../storage/namespace.js';
import { CacheImage } from './cache.js';
import { copyRanges, type CopyExOptions, type CopyExResult } from './copy.js';
import { mergeFiles, type VdMergeOptions } from './merge.js';
import {
  VD_IMAGE_CONTENT_UNKNOWN,
  VD_IMAGE_FLAGS_DIFF,
  VD_OPEN_FLAGS_DISCARD,
  VD_OPEN_FLAGS_HONOR_SAME,
  VD_OPEN_FLAGS_HONOR_ZEROES,
  VD_OPEN_FLAGS_IGNORE_FLUSH,
  VD_OPEN_FLAGS_INFO,
  VD_OPEN_FLAGS_READONLY,
  VD_OPEN_FLAGS_SHAREABLE,
  checkOpenFlags,
  createTypeFor,
  imageFlagNames,
  imageFlagsOf,
  openFlagNames,
} from './flags.js';

/** VD_LAST_IMAGE: "the top", wherever an image number is asked for */
export const VD_LAST_IMAGE = 0xffffffff;

/** one image of the stack */
interface Entry {
  image: Image;
  /** absolute name in `ns` */
  path: string;
  format: string;
  ns: Namespace;
  /** what VDGetOpenFlags reports: READONLY is set while an image above it is the top */
  flags: number;
  /** the flags the caller gave (open or setOpenFlags), restored when this image is the top again */
  own: number;
  /** opened keeping its identity (an image below the top: only its metadata is ever written) */
  lower: boolean;
}

export interface VDiskOptions {
  /** where images are named unless an open or create names its own (VDCreate's per-disk I/O interface) */
  namespace?: Namespace;
}

export interface VdImageOptions {
  /** where this image's files are named (VD's per-image I/O interface) */
  namespace?: Namespace;
}

export interface CreateBaseOptions extends VdImageOptions {
  /** VD_IMAGE_FLAGS_* (FIXED, SPLIT_2G, ESX; DIFF is refused here) */
  imageFlags?: number;
  comment?: string;
  pchs?: Geometry;
  lchs?: Geometry;
  /** the image's UUID (default: a new one) where the format has one */
  uuid?: string;
  /** VD_OPEN_FLAGS_* the new image is opened with */
  openFlags?: number;
  overwrite?: boolean;
  /** more create options of the format (qcow2 clusterSize, VHDX blockSize, ...) */
  createOptions?: Partial<CreateOptions>;
}

export interface CreateDiffOptions extends VdImageOptions {
  /** VD_IMAGE_FLAGS_* (DIFF is implied; SPLIT_2G for a split VMDK child) */
  imageFlags?: number;
  comment?: string;
  uuid?: string;
  /** the parent UUID the child records (default: the parent's own, as VD queries it) */
  parentUuid?: string;
  openFlags?: number;
  overwrite?: boolean;
  createOptions?: Partial<CreateOptions>;
}

export interface CacheCreateOptions extends VdImageOptions {
  /** the cache's virtual size (default: the container's size); ranges past it are never cached */
  size?: number;
  openFlags?: number;
  overwrite?: boolean;
  createOptions?: Partial<CreateOptions>;
}

/** codes after which VD's NORMAL open falls back to read-only ("read-only elsewhere") */
const READ_ONLY_FALLBACK = new Set(['FILENOPERMISSION', 'RDONLY', 'CMPRDONLY']);

export class VDisk {
  private entries: Entry[] = [];
  private cache: CacheImage | undefined;
  /** the data path over the stack (undefined while it is empty) */
  private data: Disk | undefined;
  private chain: ChainImage | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  readonly namespace: Namespace;

  /** VDCreate: an empty container */
  constructor(opts: VDiskOptions = {}) {
    this.namespace = opts.namespace ?? hostFiles();
  }

  private run<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.queue.then(fn);
    this.queue = r.catch(() => {});
    return r;
  }

  /** VDGetCount */
  getCount(): number {
    return this.entries.length;
  }

  /** VDIsReadOnly: true when the top is read-only or there is no image */
  isReadOnly(): boolean {
    const top = this.entries[this.entries.length - 1];
    return !top || top.image.readOnly;
  }

  private entry(nImage: number): Entry {
    const n = nImage === VD_LAST_IMAGE ? this.entries.length - 1 : nImage;
    const e = this.entries[n];
    if (!Number.isInteger(n) || !e) throw new DiskError('INVAL', 'no image with this number is open in the container (VERR_VD_IMAGE_NOT_FOUND)', { field: 'nImage', found: nImage, expected: `0..${this.entries.length - 1}` });
    return e;
  }

  private index(nImage: number): number {
    return this.entries.indexOf(this.entry(nImage));
  }

  private rebuild(): void {
    const top = this.entries[this.entries.length - 1];
    if (!top) {
      this.chain = undefined;
      this.data = undefined;
      return;
    }
    this.chain = new ChainImage(this.entries.map((e) => e.image).reverse());
    this.data = Disk.from(this.chain, { honorZeroes: (top.flags & VD_OPEN_FLAGS_HONOR_ZEROES) !== 0, discard: (top.flags & VD_OPEN_FLAGS_DISCARD) !== 0 });
  }

  private opened(): { data: Disk; chain: ChainImage; top: Entry } {
    if (!this.data || !this.chain) throw new DiskError('NOIO', 'no image is open in the container (VERR_VD_NOT_OPENED)', { field: 'nImage' });
    return { data: this.data, chain: this.chain, top: this.entries[this.entries.length - 1]! };
  }

  /** READONLY|SHAREABLE is what every read-only open is; SHAREABLE read-write would need locks vdkit does not take */
  private static refuseShareable(flags: number, path: string): void {
    if (flags & VD_OPEN_FLAGS_SHAREABLE && !(flags & VD_OPEN_FLAGS_READONLY)) {
      throw new DiskError('NOTSUPPORTED', 'VD_OPEN_FLAGS_SHAREABLE on a writable image: vdkit cannot make concurrent writers of one image safe (open it READONLY, or without SHAREABLE)', { path, field: 'uOpenFlags', found: openFlagNames(flags) });
    }
  }

  private static refuseDiscard(flags: number, img: Image): void {
    if (flags & VD_OPEN_FLAGS_DISCARD && (img.capabilities.discard !== 'native' || !img.discard)) {
      throw new DiskError('NOTSUPPORTED', `${img.format} images cannot discard (VERR_VD_DISCARD_NOT_SUPPORTED)`, { path: img.path, field: 'uOpenFlags', found: 'DISCARD' });
    }
  }

  /**
   * Open one image and stack it on the top; the caller holds the lock. `sameContent`: what the
   * disk reads does not change (a child just made, the images left by a merge), so the cache
   * stays as it is.
   */
  private async stack(format: string | undefined, path: string, flags: number, ns: Namespace, sameContent = false): Promise<void> {
    checkOpenFlags(flags, path);
    VDisk.refuseShareable(flags, path);
    if (!sameContent) await this.cache?.refuseStale();
    const below = this.entries[this.entries.length - 1];
    let img: Image;
    try {
      img = await openLinkIn(ns, path, { format, readOnly: (flags & VD_OPEN_FLAGS_READONLY) !== 0, cowByCaller: true });
    } catch (err) {
      // NORMAL: "read/write if possible, or read-only elsewhere"
      if (flags & VD_OPEN_FLAGS_READONLY || !(err instanceof DiskError) || !READ_ONLY_FALLBACK.has(err.code)) throw err;
      img = await openLinkIn(ns, path, { format, readOnly: true, cowByCaller: true });
      flags |= VD_OPEN_FLAGS_READONLY;
    }
    try {
      if (!(flags & VD_OPEN_FLAGS_INFO)) await this.checkStacking(img, ns, below);
      VDisk.refuseDiscard(flags, img);
      // the image below stops being the top: read-only from now on, as VDOpen switches it
      if (below && !below.image.readOnly) await this.reopen(below, true, true);
    } catch (err) {
      await img.close().catch(() => {});
      throw err;
    }
    this.entries.push({ image: img, path: ns.absolute(path), format: img.format, ns, flags, own: flags, lower: false });
    this.rebuild();
    if (!sameContent) await this.cache?.invalidate();
  }

  /** VDOpen's linkage check: a base first, then each image a child of the one below it. */
  private async checkStacking(img: Image, ns: Namespace, below: Entry | undefined): Promise<void> {
    const link = img.backing();
    if (!below) {
      if (link) throw new DiskError('PARTIALCHAIN', 'image 0 of a container must be a base image; this one is a differencing image (open its parents first, or open it with VD_OPEN_FLAGS_INFO)', { path: img.path, field: 'nImage', found: link.hint });
      return;
    }
    if (!link) throw new DiskError('INVALIDCHAIN', `this image is not a differencing image, so it cannot be stacked on ${below.path}`, { path: img.path, field: 'parent', expected: below.path });
    if (link.parentId === undefined) {
      // a link by name only (qcow2): the name must lead to the image below
      const found = await locateParent(ns, img.path, link, {}, chainFormats).catch(() => undefined);
      const want = await below.ns.realName(below.path);
      if (found === undefined || (await ns.realName(found)) !== want) {
        throw new DiskError('INVALIDCHAIN', `this image's parent is not ${below.path}`, { path: img.path, field: 'parent hint', found: link.hint, expected: below.path });
      }
    }
    await checkLink(ns, img.path, img, below.path, below.image, link.parentId, chainFormats);
  }

  /** Close and open one image again (read-only or not); on failure it is left open read-only. */
  private async reopen(e: Entry, readOnly: boolean, lower: boolean): Promise<void> {
    if (e.image.readOnly === readOnly && (readOnly || e.lower === lower)) return;
    await e.image.close();
    try {
      // metadata writes to an image below the top must not renew its identity (the child records it)
      e.image = await openLinkIn(e.ns, e.path, { format: e.format, readOnly, cowByCaller: true, preserveIdentity: lower });
    } catch (err) {
      e.image = await openLinkIn(e.ns, e.path, { format: e.format, readOnly: true, cowByCaller: true });
      e.flags |= VD_OPEN_FLAGS_READONLY;
      this.rebuild();
      throw err;
    }
    e.flags = readOnly ? e.flags | VD_OPEN_FLAGS_READONLY : e.flags & ~VD_OPEN_FLAGS_READONLY;
    e.lower = lower;
    this.rebuild();
  }

  /** VDOpen: stack the image at `path` (format detected when undefined) on the top. */
  open(format: string | undefined, path: string, openFlags = 0, opts: VdImageOptions = {}): Promise<void> {
    return this.run(() => this.stack(format, path, openFlags, opts.namespace ?? this.namespace));
  }

  /** VDCreateBase: create a base image in an empty container and open it. */
  createBase(format: string, path: string, size: number, opts: CreateBaseOptions = {}): Promise<void> {
    return this.run(async () => {
      if (this.entries.length > 0) throw new DiskError('INVAL', 'VDCreateBase needs an empty container', { path, field: 'nImage', found: this.entries.length });
      const ns = opts.namespace ?? this.namespace;
      const flags = opts.openFlags ?? 0;
      checkOpenFlags(flags, path);
      VDisk.refuseShareable(flags, path);
      const driver = driverByName(format);
      const type = createTypeFor(driver, opts.imageFlags ?? 0, { diff: false, path });
      const made = await Disk.create(path, { ...opts.createOptions, namespace: ns, format: driver.name, capacity: size, type, overwrite: opts.overwrite });
      try {
        await applyProperties(made.image, { uuid: opts.uuid, comment: opts.comment, pchs: opts.pchs, lchs: opts.lchs });
      } finally {
        await made.close();
      }
      await this.stack(driver.name, path, flags, ns);
    });
  }

  /** VDCreateDiff: create a child of the top and stack it (the old top becomes read-only). */
  createDiff(format: string | undefined, path: string, opts: CreateDiffOptions = {}): Promise<void> {
    return this.run(async () => {
      const { top } = this.opened();
      const ns = opts.namespace ?? this.namespace;
      const flags = opts.openFlags ?? 0;
      checkOpenFlags(flags, path);
      VDisk.refuseShareable(flags, path);
      const fmt = format ?? top.format;
      const type = createTypeFor(driverByName(fmt), (opts.imageFlags ?? 0) & ~VD_IMAGE_FLAGS_DIFF, { diff: true, path });
      // the parent is settled first (flushed, read-only), so what the child records of it is final
      await this.opened().data.flush();
      await this.reopen(top, true, true);
      const spec = childCreateOptions(top.image, top.path, path, { format: fmt, type, namespace: ns, overwrite: opts.overwrite, createOptions: opts.createOptions });
      await (await Disk.create(path, spec)).close();
      if (opts.uuid !== undefined || opts.comment !== undefined || opts.parentUuid !== undefined) {
        const link = await openLinkIn(ns, path, { format: fmt, cowByCaller: true });
        try {
          await applyProperties(link, { uuid: opts.uuid, comment: opts.comment, parentUuid: opts.parentUuid });
        } finally {
          await link.close();
        }
      }
      await this.stack(fmt, path, flags, ns, opts.parentUuid === undefined);
    });
  }

  /**
   * VDClose: close the top image, deleting its files with `deleteFile`. When it was writable,
   * the image below becomes the top and is opened again with the flags it was given.
   */
  close(deleteFile = false): Promise<void> {
    return this.run(async () => {
      const { data, top } = this.opened();
      await this.cache?.refuseStale();
      if (!top.image.readOnly) await data.flush();
      const files = deleteFile ? await filesOf(top) : [];
      this.entries.pop();
      this.rebuild();
      await top.image.close();
      for (const f of files) await top.ns.remove(f);
      const below = this.entries[this.entries.length - 1];
      if (below && !(top.flags & VD_OPEN_FLAGS_READONLY)) {
        await this.reopen(below, (below.own & VD_OPEN_FLAGS_READONLY) !== 0, false);
        below.flags = below.own;
        this.rebuild();
      }
      await this.cache?.invalidate();
    });
  }

  /** VDCloseAll: the cache (kept) and every image, top first. */
  closeAll(): Promise<void> {
    return this.run(async () => {
      if (this.data && !this.isReadOnly()) await this.data.flush();
      const errors: unknown[] = [];
      if (this.cache) await this.cache.close(false).catch((e) => errors.push(e));
      this.cache = undefined;
      for (const e of this.entries.reverse()) await e.image.close().catch((err) => errors.push(err));
      this.entries = [];
      this.rebuild();
      if (errors.length > 0) throw errors[0];
    });
  }

  // ------------------------------------------------------------------ indexed getters and setters

  /** VDGetSize */
  getSize(nImage: number): Promise<number> {
    return this.run(async () => this.entry(nImage).image.capacity);
  }
  /** VDGetFileSize: bytes of all the image's files */
  getFileSize(nImage: number): Promise<number> {
    return this.run(async () => (await this.entry(nImage).image.info()).fileSize);
  }
  /** VDGetVersion: the format's version number of this image (undefined where it has none) */
  getVersion(nImage: number): Promise<number | undefined> {
    return this.run(async () => (await this.entry(nImage).image.info()).version);
  }
  /** VDGetImageFlags: VD_IMAGE_FLAGS_* from the image's type and link */
  getImageFlags(nImage: number): Promise<number> {
    return this.run(async () => imageFlagsOf(this.entry(nImage).image));
  }
  /** VDGetFilename */
  getFilename(nImage: number): Promise<string> {
    return this.run(async () => this.entry(nImage).path);
  }
  /** VDGetFormat */
  getFormat(nImage: number): Promise<string> {
    return this.run(async () => this.entry(nImage).format);
  }
  /** VDGetOpenFlags: as the image is open now (READONLY while an image above it is the top) */
  getOpenFlags(nImage: number): Promise<number> {
    return this.run(async () => this.entry(nImage).flags);
  }

  /**
   * VDSetOpenFlags: READONLY set or cleared reopens the image read-only or read-write (an image
   * below the top may be made writable for its metadata; data writes still go to the top).
   */
  setOpenFlags(nImage: number, openFlags: number): Promise<void> {
    return this.run(async () => {
      const e = this.entry(nImage);
      checkOpenFlags(openFlags, e.path);
      VDisk.refuseShareable(openFlags, e.path);
      VDisk.refuseDiscard(openFlags, e.image);
      const lower = e !== this.entries[this.entries.length - 1];
      if (!e.image.readOnly && this.data) await this.data.flush();
      await this.reopen(e, (openFlags & VD_OPEN_FLAGS_READONLY) !== 0, lower);
      e.flags = openFlags;
      e.own = openFlags;
      this.rebuild();
    });
  }

  private property<K extends PropertyName>(nImage: number, k: K): Promise<DiskProperties[K]> {
    return this.run(async () => getProperties(this.entry(nImage).image)[k]);
  }
  private setProperty(nImage: number, props: DiskProperties): Promise<void> {
    return this.run(async () => {
      const e = this.entry(nImage);
      if (e.image.readOnly) throw new DiskError('RDONLY', 'the image is open read-only (VERR_VD_IMAGE_READ_ONLY); setOpenFlags first', { path: e.path, field: Object.keys(props)[0] });
      await setProperties(e.image, props);
      await e.image.flush();
    });
  }

  /** VDGetComment (undefined where the format stores none) */
  getComment(nImage: number): Promise<string | undefined> {
    return this.property(nImage, 'comment');
  }
  /** VDSetComment */
  setComment(nImage: number, comment: string): Promise<void> {
    return this.setProperty(nImage, { comment });
  }
  /** VDGetUuid */
  getUuid(nImage: number): Promise<string | undefined> {
    return this.property(nImage, 'uuid');
  }
  /** VDSetUuid (no UUID: a new one) */
  setUuid(nImage: number, uuid?: string): Promise<void> {
    return this.setProperty(nImage, { uuid: uuid ?? 'new' });
  }
  /** VDGetModificationUuid (VDI, VHDX; undefined elsewhere) */
  getModificationUuid(nImage: number): Promise<string | undefined> {
    return this.property(nImage, 'modificationUuid');
  }
  /** VDSetModificationUuid */
  setModificationUuid(nImage: number, uuid?: string): Promise<void> {
    return this.setProperty(nImage, { modificationUuid: uuid ?? 'new' });
  }
  /** VDGetParentUuid */
  getParentUuid(nImage: number): Promise<string | undefined> {
    return this.property(nImage, 'parentUuid');
  }
  /** VDSetParentUuid */
  setParentUuid(nImage: number, uuid?: string): Promise<void> {
    return this.setProperty(nImage, { parentUuid: uuid ?? 'new' });
  }
  /** VDGetPCHSGeometry (undefined: VERR_VD_GEOMETRY_NOT_SET) */
  getPCHSGeometry(nImage: number): Promise<Geometry | undefined> {
    return this.property(nImage, 'pchs');
  }
  /** VDSetPCHSGeometry */
  setPCHSGeometry(nImage: number, pchs: Geometry): Promise<void> {
    return this.setProperty(nImage, { pchs });
  }
  /** VDGetLCHSGeometry (undefined: VERR_VD_GEOMETRY_NOT_SET) */
  getLCHSGeometry(nImage: number): Promise<Geometry | undefined> {
    return this.property(nImage, 'lchs');
  }
  /** VDSetLCHSGeometry */
  setLCHSGeometry(nImage: number, lchs: Geometry): Promise<void> {
    return this.setProperty(nImage, { lchs });
  }

  // ------------------------------------------------------------------ data path

  /** VDRead: through the cache (if any) and the stack */
  read(offset: number, length: number): Promise<Buffer> {
    return this.run(() => this.readLocked(offset, length));
  }

  private async readLocked(offset: number, length: number): Promise<Buffer> {
    const { data } = this.opened();
    if (!this.cache) return data.read(offset, length);
    checkRange(offset, length, data.capacity, data.path);
    const buf = Buffer.allocUnsafe(length);
    await this.cache.read(buf, offset, data.capacity, (into, at) => data.readInto(into, at));
    return buf;
  }

  /**
   * VDWrite: to the top. Without HONOR_SAME on a differencing top, the parts of a write that
   * fall in blocks the top does not hold and that bring nothing new (the stack already reads
   * those bytes) are not written, so the block stays unallocated (VD's "block unchanged").
   */
  write(offset: number, data: Buffer): Promise<void> {
    return this.run(() => this.writeLocked(offset, data, false));
  }

  private async writeLocked(offset: number, buf: Buffer, honorSame: boolean): Promise<void> {
    const { data, chain, top } = this.opened();
    if (top.image.readOnly) throw new DiskError('RDONLY', undefined, { path: top.path });
    await this.cache?.refuseStale(offset, buf.length);
    if (honorSame || top.flags & VD_OPEN_FLAGS_HONOR_SAME || this.entries.length < 2 || buf.length === 0) await data.write(offset, buf);
    else await writeUnlessSame(data, chain, offset, buf);
    await this.cache?.update(buf, offset);
  }

  /** VDFlush (nothing with IGNORE_FLUSH on the top) */
  flush(): Promise<void> {
    return this.run(async () => {
      const { data, top } = this.opened();
      if (!(top.flags & VD_OPEN_FLAGS_IGNORE_FLUSH) && !top.image.readOnly) await data.flush();
      await this.cache?.flush();
    });
  }

  /** VDDiscardRanges: needs VD_OPEN_FLAGS_DISCARD on the top */
  discardRanges(ranges: readonly { offset: number; length: number }[]): Promise<void> {
    return this.run(async () => {
      const { data } = this.opened();
      for (const r of ranges) {
        await this.cache?.refuseStale(r.offset, r.length);
        await data.discard(r.offset, r.length);
        await this.cache?.update(Buffer.alloc(r.length), r.offset);
      }
    });
  }

  // ------------------------------------------------------------------ merge and copy

  /**
   * VDMerge: fold images `nImageFrom`..`nImageTo` into `nImageTo`, in either direction (a
   * child into a parent, or parents into a child); the merged images are deleted and leave
   * the container. What the container reads does not change.
   */
  merge(nImageFrom: number, nImageTo: number, opts: VdMergeOptions = {}): Promise<void> {
    return this.run(async () => {
      const from = this.index(nImageFrom);
      const to = this.index(nImageTo);
      if (from === to) return;
      const lo = Math.min(from, to);
      const hi = Math.max(from, to);
      const ns = this.entries[lo]!.ns;
      if (this.entries.slice(lo, Math.min(hi + 2, this.entries.length)).some((e) => e.ns !== ns)) {
        throw new DiskError('NOTSUPPORTED', 'the images merged (and the one above them) must share one namespace', { field: 'namespace' });
      }
      if (this.data && !this.isReadOnly()) await this.data.flush();
      const saved = this.entries.map(({ path, format, ns: n, own }) => ({ path, format, ns: n, own }));
      for (const e of this.entries.reverse()) await e.image.close();
      this.entries = [];
      this.rebuild();
      let keep = saved.map((_, i) => i);
      let failure: unknown;
      try {
        keep = await mergeFiles(ns, saved.map((s) => s.path), from, to, opts);
      } catch (err) {
        failure = err;
      }
      // what is left, with the flags each image was given (stacking makes the lower ones read-only again)
      for (const i of keep) {
        const s = saved[i]!;
        await this.stack(s.format, s.path, s.own, s.ns, true);
      }
      if (failure !== undefined) throw failure;
    });
  }

  /**
   * VDCopyEx: copy the content of images 0..nImage of this container into `dst`: into a new image
   * (opts.path: a base in an empty container, else a child of its top) or into its top as it is.
   * With `fromSame`/`toSame` (VDCopyEx's nImageFromSame/nImageToSame: this container's image
   * `fromSame` reads the same as `dst`'s image `toSame`), only the ranges images above `fromSame`
   * hold are copied; otherwise every range whose content differs in `dst` is.
   */
  copyEx(nImage: number, dst: VDisk, opts: CopyExOptions = {}): Promise<CopyExResult> {
    if (dst === this) return Promise.reject(new DiskError('NOTSUPPORTED', 'moving an image inside its own container (VDCopyEx with pDiskFrom == pDiskTo) is not supported', { field: 'pDiskTo' }));
    return this.run(async () => {
      const n = this.index(nImage);
      const links = this.entries.slice(0, n + 1);
      const view = new ChainImage(links.map((e) => e.image).reverse());
      const shortcut = opts.fromSame !== undefined && opts.toSame !== undefined && opts.fromSame !== VD_IMAGE_CONTENT_UNKNOWN && opts.toSame !== VD_IMAGE_CONTENT_UNKNOWN;
      if (shortcut && (opts.fromSame! > n || opts.fromSame! < 0)) throw new DiskError('INVAL', 'nImageFromSame must be an image at or below nImage', { field: 'nImageFromSame', found: opts.fromSame, expected: `0..${n}` });
      if (opts.path !== undefined) {
        const imageFlags = (opts.imageFlags ?? 0) & ~VD_IMAGE_FLAGS_DIFF;
        if (dst.getCount() === 0) await dst.createBase(opts.format ?? links[n]!.format, opts.path, opts.size ?? view.capacity, { imageFlags, uuid: opts.uuid, openFlags: opts.openFlags, namespace: opts.namespace, createOptions: opts.createOptions, overwrite: opts.overwrite });
        else await dst.createDiff(opts.format, opts.path, { imageFlags, uuid: opts.uuid, openFlags: opts.openFlags, namespace: opts.namespace, createOptions: opts.createOptions, overwrite: opts.overwrite });
      }
      return dst.run(async () => {
        const target = dst.opened();
        if (shortcut && (opts.toSame! >= dst.entries.length || opts.toSame! < 0)) throw new DiskError('INVAL', 'nImageToSame is not an image of the destination', { field: 'nImageToSame', found: opts.toSame, expected: `0..${dst.entries.length - 1}` });
        if (target.top.image.readOnly) throw new DiskError('RDONLY', 'the destination top is open read-only', { path: target.top.path });
        const result = await copyRanges(view, {
          capacity: target.data.capacity,
          read: (offset, length) => dst.readLocked(offset, length),
          // the shortcut promises these ranges are what changed: written as they are, no comparing
          write: (offset, buf) => dst.writeLocked(offset, buf, shortcut),
        }, { ...opts, aboveDepth: shortcut ? n - opts.fromSame! : undefined });
        await target.data.flush();
        return result;
      });
    });
  }

  // ------------------------------------------------------------------ cache image

  /** VDCreateCache: create a cache image (a writable sparse image of any format) and use it */
  createCache(format: string, path: string, opts: CacheCreateOptions = {}): Promise<void> {
    return this.run(async () => {
      if (this.cache) throw new DiskError('INVAL', 'the container already has a cache (VERR_VD_CACHE_ALREADY_EXISTS)', { path, field: 'cache', found: this.cache.path });
      const size = opts.size ?? this.opened().data.capacity;
      const ns = opts.namespace ?? this.namespace;
      await (await Disk.create(path, { ...opts.createOptions, namespace: ns, format, capacity: size, overwrite: opts.overwrite })).close();
      this.cache = await CacheImage.open(ns, path, format, opts.openFlags ?? 0);
    });
  }

  /** VDCacheOpen: use an existing cache image (made for this disk: nothing checks that it was) */
  cacheOpen(format: string | undefined, path: string, openFlags = 0, opts: VdImageOptions = {}): Promise<void> {
    return this.run(async () => {
      if (this.cache) throw new DiskError('INVAL', 'the container already has a cache (VERR_VD_CACHE_ALREADY_EXISTS)', { path, field: 'cache', found: this.cache.path });
      checkOpenFlags(openFlags, path);
      VDisk.refuseShareable(openFlags, path);
      this.cache = await CacheImage.open(opts.namespace ?? this.namespace, path, format, openFlags);
    });
  }

  /** VDCacheClose */
  cacheClose(deleteFile = false): Promise<void> {
    return this.run(async () => {
      if (!this.cache) throw new DiskError('NOIO', 'the container has no cache (VERR_VD_NOT_OPENED)', { field: 'cache' });
      const c = this.cache;
      this.cache = undefined;
      await c.close(deleteFile);
    });
  }

  /** reads answered by the cache and reads it had to fill from the disk, since it was opened */
  cacheStats(): { hits: number; misses: number } | undefined {
    return this.cache && { hits: this.cache.hits, misses: this.cache.misses };
  }

  /** VDDumpImages: a text listing of the container, one line per image, base first */
  dumpImages(): Promise<string> {
    return this.run(async () => {
      const lines = [`container: ${this.entries.length} image(s), ${this.isReadOnly() ? 'read-only' : 'read-write'}${this.data ? `, ${this.data.capacity} bytes` : ''}`];
      for (const [i, e] of this.entries.entries()) {
        const p = getProperties(e.image);
        lines.push(`image ${i}: ${e.format} ${e.image.type} ${e.path} size=${e.image.capacity} open=${openFlagNames(e.flags)} image=${imageFlagNames(imageFlagsOf(e.image))}${p.uuid ? ` uuid=${p.uuid}` : ''}${p.parentUuid ? ` parent=${p.parentUuid}` : ''}`);
      }
      if (this.cache) lines.push(`cache: ${this.cache.describe()}`);
      return lines.join('\n') + '\n';
    });
  }
}

/** a DiskProperties with only the given values the format can store (VD's create calls pass the rest to backends that ignore it) */
async function applyProperties(img: Image, props: DiskProperties): Promise<void> {
  const settable = new Set(settableProperties(img.format));
  const given = Object.fromEntries(Object.entries(props).filter(([k, v]) => v !== undefined && settable.has(k as PropertyName))) as DiskProperties;
  if (Object.keys(given).length > 0) await setProperties(img, given);
}

/** the files of an image, its first name last (a removal stopped half-way leaves a findable image) */
async function filesOf(e: Entry): Promise<string[]> {
  const files = (await e.image.info()).files.map((f) => e.ns.absolute(f));
  return [...files.filter((f) => f !== e.path), e.path];
}

/** VD's "block unchanged" rule: skip the parts in clusters the top lacks whose bytes the stack already reads. */
async function writeUnlessSame(data: Disk, chain: ChainImage, offset: number, buf: Buffer): Promise<void> {
  const top = chain.layers[0]!;
  const g = top.clusterSize;
  const end = offset + buf.length;
  const first = Math.floor(offset / g) * g;
  const last = Math.min(Math.ceil(end / g) * g, chain.capacity);
  const lacking = (await top.blockStatus(first, last - first)).filter((r) => r.state === 'unallocated');
  const lacks = (c: number) => lacking.some((r) => r.offset < c + g && r.offset + r.length > c);
  let run = -1; // start of the bytes still to be written
  for (let c = first; c < last; c += g) {
    const from = Math.max(c, offset);
    const to = Math.min(c + g, end);
    let same = false;
    if (lacks(c)) {
      const now = Buffer.allocUnsafe(to - from);
      await chain.read(now, from);
      same = now.equals(buf.subarray(from - offset, to - offset));
    }
    if (same && run >= 0) {
      await data.write(run, buf.subarray(run - offset, from - offset));
      run = -1;
    } else if (!same && run < 0) run = from;
  }
  if (run >= 0) await data.write(run, buf.subarray(run - offset));
}
