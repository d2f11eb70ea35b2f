/**
 * The Disk API: what VixDiskLib_Open/Read/Write/GetInfo/... are to a VDDK program, in bytes.
 * It is the one place that validates requests (range, read-only, closed) before a driver sees
 * them, serialises writes, and offers sector-unit helpers for callers who think in sectors.
 */
import { DiskError } from './core/errors.js';
import { SECTOR_SIZE, checkRange } from './core/ints.js';
import { ChainImage, openChain, parentFacts, type ChainFormats, type ChainOpenOptions, type LinkOpenOptions } from './chain/chain.js';
import { findChildren } from './chain/children.js';
import { DEFAULT_FORMAT, backends, detectFormatIn, driverByName } from './formats/registry.js';
import type { BackingLink, BlockExtent, CreateOptions, DiskInfo, Driver, Image, MappedExtent, OpenOptions, ParentFacts } from './formats/types.js';
import { hostFiles } from './storage/file.js';
import type { Namespace } from './storage/namespace.js';
import { locate } from './storage/locations.js';
import { getProperties, setProperties } from './block/properties.js';
import type { DiskProperties } from './formats/common/properties.js';
import { isZero } from './binary/zeros.js';

/** The driver for the content of `name` (host files unless `ns` is given). */
export async function detectFormat(name: string, ns?: Namespace): Promise<Driver> {
  const loc = ns ? undefined : await locate(name);
  return detectFormatIn(ns ?? loc?.namespace ?? hostFiles(), loc?.name ?? name);
}

/**
 * How the chain layer opens each link: by the format it names, else by content. The policy of
 * `opts` stops here; the driver gets only OpenOptions. This is the one place the PARTIALCHAIN
 * rule is applied.
 */
export async function openLinkIn(ns: Namespace, path: string, opts: LinkOpenOptions): Promise<Image> {
  const driver = opts.format ? driverByName(opts.format) : await detectFormatIn(ns, path);
  const { format: _format, cowByCaller, preserveIdentity, ...facts } = opts;
  const driverOpts: OpenOptions = { ...facts, updateIdentityOnWrite: !preserveIdentity };
  if (opts.snapshot) {
    if (!driver.capabilities.internalSnapshots) throw new DiskError('NOTSUPPORTED', `${driver.name} images have no internal snapshots to read`, { path, field: 'snapshot', found: JSON.stringify(opts.snapshot) });
    if (!opts.readOnly) throw new DiskError('RDONLY', 'an internal snapshot is opened read-only', { path, field: 'snapshot' });
  }
  if (!opts.readOnly && !cowByCaller) await refuseChildAlone(driver, ns, path, driverOpts);
  return driver.open(ns, path, driverOpts);
}

/**
 * PARTIALCHAIN: a child alone does not hold the whole disk, so a partial write to a unit it
 * lacks would zero-fill the rest of the unit instead of copying the parent's bytes. A caller
 * that does no copy-on-write may therefore not open a child read-write. The link is looked at
 * through a read-only open first, so a refused open writes nothing (a read-write VHDX open
 * starts a log session, a qcow2 one clears a dirty bit).
 */
async function refuseChildAlone(driver: Driver, ns: Namespace, path: string, opts: OpenOptions): Promise<void> {
  let look: Image;
  try {
    look = await driver.open(ns, path, { ...opts, readOnly: true });
  } catch {
    return; // the read-write open says what is wrong with the image
  }
  let link: BackingLink | undefined;
  try {
    link = look.backing();
  } finally {
    await look.close().catch(() => {});
  }
  if (!link) return;
  throw new DiskError('PARTIALCHAIN', `this ${driver.name} image is a child (differencing image, redo log, snapshot delta): open its chain (without singleLink) to write to it, or open this link read-only to inspect it`, {
    path,
    field: driver.parentField ?? 'parent',
    found: link.parentId ?? link.hint,
  });
}

/** one link by path (host files unless `opts.namespace`) */
export async function openLink(path: string, opts: LinkOpenOptions & { namespace?: Namespace }): Promise<Image> {
  return openLinkIn(opts.namespace ?? hostFiles(), path, opts);
}

/** the ParentFacts of the image at `name`, or undefined when it cannot be opened */
async function parentFactsAt(ns: Namespace, name: string): Promise<ParentFacts | undefined> {
  let img: Image | undefined;
  try {
    img = await openLinkIn(ns, name, { readOnly: true });
    return parentFacts(img);
  } catch {
    return undefined;
  } finally {
    await img?.close().catch(() => {});
  }
}

/** what the chain layer needs from the registry */
export const chainFormats: ChainFormats = {
  open: openLinkIn,
  extensions: (format) => driverByName(format).extensions,
  sameSize: (format) => driverByName(format).capabilities.differencingSameSize,
  family: (format, type) => driverByName(format).linkFamily?.(type),
};

export interface DiskOpenOptions extends ChainOpenOptions {
  /** where the disk's files are named (default: host files, names are paths) */
  namespace?: Namespace;
  /** format name of the top image; detected from the content when omitted */
  format?: string;
  /** open a disk read-write even though a child (redo log) in its folder depends on it */
  force?: boolean;
  /*
   * VirtualBox's VD_OPEN_FLAGS_* map onto these: READONLY is `readOnly`; the rest follow.
   */
  /**
   * VD_OPEN_FLAGS_INFO: open only the named link, read-only, for inspection: no parent is
   * looked for or checked (a missing or mismatched parent is not an error) and no child search
   * is made. Unallocated ranges read as zeros, as with `singleLink`.
   */
  infoOnly?: boolean;
  /**
   * VD_OPEN_FLAGS_HONOR_ZEROES. true (vdkit's default): an all-zero write is stored like any
   * other. false (VirtualBox's default): where the format can discard, the whole allocation
   * units an all-zero write covers are discarded instead (unallocated in a base, a zero marker
   * or zeros in a child), so they take no space; the disk reads the same either way. Formats
   * without discard, and disks opened with their parents (the chain layer does its own
   * copy-on-write and has no discard), ignore it, as VirtualBox ignores it where unsupported.
   */
  honorZeroes?: boolean;
  /**
   * VD_OPEN_FLAGS_DISCARD: allow `Disk.discard`. Without it discard requests are refused; with
   * it, a format that cannot discard is refused at open (VERR_VD_DISCARD_NOT_SUPPORTED).
   */
  discard?: boolean;
  /**
   * VD_OPEN_FLAGS_SHAREABLE: others may write the image while it is open. vdkit's drivers cache
   * metadata (tables, allocation pointers) and would lose or overwrite another writer's
   * allocations, so a shareable read-write open is refused (NOTSUPPORTED, field `shareable`);
   * with `readOnly` it is accepted (a reader that sees a torn state gets errors, never writes).
   */
  shareable?: boolean;
}

export interface SetPropertiesOptions {
  /** change the UUID even though a child in the disk's folder was made against this disk */
  force?: boolean;
}

export interface DiskCreateOptions extends CreateOptions {
  /** where the disk's files are named (default: host files, names are paths) */
  namespace?: Namespace;
  /** format name (default vmdk) */
  format?: string;
}

export class Disk {
  private closed = false;
  private writeQueue: Promise<unknown> = Promise.resolve();
  /** settles when the running exclusive operation (runExclusive) ends; reads wait for it */
  private exclusive: Promise<void> | undefined;

  private constructor(
    readonly image: Image,
    private readonly flags: { honorZeroes: boolean; discard: boolean } = { honorZeroes: true, discard: false },
  ) {}

  /**
   * Open a disk: its whole chain (parents found from the hints, checked, opened read-only),
   * or with `singleLink` only the named image. Read-write opens refuse a disk that a child in
   * its folder depends on (the VDDK guide: "it is an error to open the parent"), unless `force`.
   */
  static async open(path: string, opts: DiskOpenOptions = {}): Promise<Disk> {
    if (!opts.namespace) {
      // a URL (nbd://...) names its own namespace; its bytes are raw unless a format is given
      const loc = await locate(path);
      if (loc) return Disk.open(loc.name, { ...opts, namespace: loc.namespace, format: opts.format ?? loc.defaultFormat });
    }
    const ns = opts.namespace ?? hostFiles();
    let image: Image;
    if (opts.shareable && !opts.readOnly && !opts.infoOnly) {
      throw new DiskError('NOTSUPPORTED', `${path}: a shareable read-write open is not supported: vdkit caches metadata and concurrent writers would corrupt the image; open read-only`, { file: path, field: 'shareable' });
    }
    if (opts.infoOnly) {
      return new Disk(await openLinkIn(ns, path, { ...opts, readOnly: true }));
    }
    if (opts.singleLink) {
      // a lone link is never written through the chain layer, so it does no copy-on-write
      // itself: a child is refused read-write (PARTIALCHAIN) unless the caller says cowByCaller
      // (only internal callers that write metadata alone, like check, do)
      image = await openLinkIn(ns, path, opts);
    } else {
      image = await openChain(ns, path, opts, chainFormats);
    }
    if (!image.readOnly && !opts.force) {
      const children = await findChildren(image, chainFormats, backends().flatMap((b) => b.extensions)).catch(async (err) => {
        await image.close().catch(() => {});
        throw err;
      });
      if (children.length > 0) {
        await image.close().catch(() => {});
        throw new DiskError('RDONLY', `${children[0]} is a child of this disk: writing here would corrupt it; open read-only, or pass --force (force)`, { path, field: 'children', found: children });
      }
    }
    if (opts.discard && (image.capabilities.discard !== 'native' || !image.discard)) {
      await image.close().catch(() => {});
      throw new DiskError('NOTSUPPORTED', `${image.format} images cannot discard`, { path, field: 'discard' });
    }
    return new Disk(image, { honorZeroes: opts.honorZeroes ?? true, discard: !!opts.discard });
  }

  static async create(path: string, opts: DiskCreateOptions): Promise<Disk> {
    if (!opts.namespace) {
      const loc = await locate(path);
      if (loc) return Disk.create(loc.name, { ...opts, namespace: loc.namespace });
    }
    const driver = driverByName(opts.format ?? DEFAULT_FORMAT);
    const ns = opts.namespace ?? hostFiles();
    let spec: CreateOptions = opts;
    if (opts.parent && !opts.parent.facts) {
      // a caller that names a parent without what the child records about it: read it here (the
      // driver never opens another image); an unreadable parent leaves the driver to say so
      const facts = await parentFactsAt(ns, ns.resolve(path, opts.parent.parentPath));
      if (facts) spec = { ...opts, parent: { ...opts.parent, facts } };
    }
    return new Disk(await driver.create(ns, path, spec));
  }

  /**
   * wrap an already opened image; `flags` as the open options `honorZeroes` (default true) and
   * `discard` (default false) set them, for a caller that opened the image itself
   */
  static from(image: Image, flags: { honorZeroes?: boolean; discard?: boolean } = {}): Disk {
    return new Disk(image, { honorZeroes: flags.honorZeroes ?? true, discard: !!flags.discard });
  }

  get path(): string {
    return this.image.path;
  }
  /** where the disk's files are named */
  get namespace(): Namespace {
    return this.image.namespace;
  }
  get format(): string {
    return this.image.format;
  }
  /** the format's own type name (VMDK createType, ...) */
  get type(): string {
    return this.image.type;
  }
  /** virtual size in bytes */
  get capacity(): number {
    return this.image.capacity;
  }
  get sectorCount(): number {
    return Math.floor(this.image.capacity / SECTOR_SIZE);
  }
  get readOnly(): boolean {
    return this.image.readOnly;
  }

  private check(): void {
    if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.path });
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.check();
    checkRange(offset, length, this.capacity, this.path);
    if (this.exclusive) await this.exclusive;
    const buf = Buffer.allocUnsafe(length);
    if (length > 0) await this.image.read(buf, offset);
    return buf;
  }

  async readInto(into: Buffer, offset: number): Promise<void> {
    this.check();
    checkRange(offset, into.length, this.capacity, this.path);
    if (this.exclusive) await this.exclusive;
    if (into.length > 0) await this.image.read(into, offset);
  }

  /**
   * Run `fn` alone on this disk: after the writes already queued, with later writes queued
   * behind it and reads and block status waiting for it. For operations that move data inside
   * the open image (VixDiskLib_Shrink, VixDiskLib_Defragment): a write applied to a block's old
   * place after it was copied would be lost when the table switches to the copy.
   */
  async runExclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.check();
    const run = this.writeQueue.then(fn);
    const done = run.then(
      () => {},
      () => {},
    );
    this.writeQueue = done;
    this.exclusive = done;
    try {
      return await run;
    } finally {
      if (this.exclusive === done) this.exclusive = undefined;
    }
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.check();
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    checkRange(offset, data.length, this.capacity, this.path);
    if (data.length === 0) return;
    // Writes are applied one at a time: allocation in sparse formats is not reentrant.
    const run = this.writeQueue.then(() => (this.flags.honorZeroes || !this.image.discard ? this.image.write(data, offset) : this.writeSkippingZeroes(data, offset)));
    this.writeQueue = run.catch(() => {});
    await run;
  }

  /** honorZeroes false: whole all-zero allocation units are discarded, the rest written */
  private async writeSkippingZeroes(data: Buffer, offset: number): Promise<void> {
    const unit = this.image.clusterSize;
    let pending = 0; // start (in data) of bytes not yet handed on
    let at = Math.ceil(offset / unit) * unit - offset;
    while (at + unit <= data.length) {
      let end = at;
      while (end + unit <= data.length && isZero(data.subarray(end, end + unit))) end += unit;
      if (end > at) {
        if (at > pending) await this.image.write(data.subarray(pending, at), offset + pending);
        await this.image.discard!(offset + at, end - at);
        pending = end;
        at = end;
      } else {
        at += unit;
      }
    }
    if (pending < data.length) await this.image.write(data.subarray(pending), offset + pending);
  }

  /**
   * Discard [offset, offset+length) (VDDiscardRanges): needs the `discard` open flag. Whole
   * allocation units stop taking space; the range reads as zeros afterwards.
   */
  async discard(offset: number, length: number): Promise<void> {
    this.check();
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    if (!this.flags.discard) throw new DiskError('NOTSUPPORTED', 'discard was not enabled when the disk was opened (open option discard)', { path: this.path, field: 'discard' });
    checkRange(offset, length, this.capacity, this.path);
    if (length === 0) return;
    const run = this.writeQueue.then(() => this.image.discard!(offset, length));
    this.writeQueue = run.catch(() => {});
    await run;
  }

  async readSectors(startSector: number, sectorCount: number): Promise<Buffer> {
    return this.read(startSector * SECTOR_SIZE, sectorCount * SECTOR_SIZE);
  }

  async writeSectors(startSector: number, data: Buffer): Promise<void> {
    if (data.length % SECTOR_SIZE !== 0) throw new DiskError('INVAL', 'sector writes take whole sectors', { path: this.path, length: data.length });
    return this.write(startSector * SECTOR_SIZE, data);
  }

  async blockStatus(offset = 0, length = this.capacity - offset): Promise<BlockExtent[]> {
    this.check();
    checkRange(offset, length, this.capacity, this.path);
    if (length === 0) return [];
    if (this.exclusive) await this.exclusive;
    return this.image.blockStatus(offset, length);
  }

  /**
   * blockStatus for `vdkit map`: every range with the depth of the link that answers for it (0 =
   * the top; a range no link stores: the bottom link's), and the file and byte offset of the
   * ranges a driver stores in one place (qemu-img map's offset)
   */
  async mapStatus(offset = 0, length = this.capacity - offset): Promise<MappedExtent[]> {
    this.check();
    checkRange(offset, length, this.capacity, this.path);
    if (length === 0) return [];
    if (this.exclusive) await this.exclusive;
    const img = this.image;
    const rs = img.mapStatus ? await img.mapStatus(offset, length) : await img.blockStatus(offset, length);
    return img instanceof ChainImage ? rs : rs.map((r) => ({ ...r, depth: 0 }));
  }

  /** the images the disk is made of, top first (one for a disk without parents or opened alone) */
  get links(): readonly Image[] {
    return this.image instanceof ChainImage ? this.image.layers : [this.image];
  }

  async flush(): Promise<void> {
    this.check();
    // A driver whose flush commits metadata (VHDX writes its BAT through the log there) gets it
    // queued like a write, so it never interleaves with a write allocating a block; a plain
    // fdatasync waits for the writes before it but lets later ones go on.
    if (this.image.capabilities.flush === 'concurrent') {
      await this.writeQueue;
      await this.image.flush();
      return;
    }
    const run = this.writeQueue.then(() => this.image.flush());
    this.writeQueue = run.catch(() => {});
    await run;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.writeQueue;
    this.closed = true;
    await this.image.close();
  }

  async info(): Promise<DiskInfo> {
    this.check();
    return this.image.info();
  }

  metadataKeys(): string[] {
    this.check();
    return this.image.metadataKeys();
  }

  readMetadata(key: string): string | undefined {
    this.check();
    return this.image.readMetadata(key);
  }

  async writeMetadata(key: string, value: string): Promise<void> {
    this.check();
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    const run = this.writeQueue.then(() => this.image.writeMetadata(key, value));
    this.writeQueue = run.catch(() => {});
    await run;
  }

  /** UUIDs, comment, geometries and adapter type (VDGetUuid, VDGetComment, ...); undefined where the format has none */
  getProperties(): DiskProperties {
    this.check();
    return getProperties(this.image);
  }

  /**
   * Change some of them (VDSetUuid, VDSetComment, ...). NOTSUPPORTED, naming the property,
   * where the format does not store it; a new `uuid` is refused while a child in the disk's
   * folder depends on this disk, unless `force`.
   */
  async setProperties(props: DiskProperties, opts: SetPropertiesOptions = {}): Promise<void> {
    this.check();
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    if (props.uuid !== undefined && !opts.force) {
      const children = await findChildren(this.image, chainFormats, backends().flatMap((b) => b.extensions));
      if (children.length > 0) {
        throw new DiskError('RDONLY', `${children[0]} is a child of this disk: a new uuid would break its link; pass --force (force) to do it anyway`, { path: this.path, field: 'uuid', found: children });
      }
    }
    const run = this.writeQueue.then(() => setProperties(this.image, props));
    this.writeQueue = run.catch(() => {});
    await run;
  }
}

export async function openDisk(path: string, opts: DiskOpenOptions = {}): Promise<Disk> {
  return Disk.open(path, opts);
}

export async function createDisk(path: string, opts: DiskCreateOptions): Promise<Disk> {
  return Disk.create(path, opts);
}
