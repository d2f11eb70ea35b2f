/**
 * VMDK driver: one link (descriptor + extents) opened as an Image.
 *
 * Design notes
 * - Layout: a link is a text descriptor (separate file, or embedded at sector 1 of a
 *   monolithic sparse file) naming extents in order; extent i covers the virtual sectors after
 *   extents 0..i-1. Sparse extents: sparse.ts; flat/zero: extents.ts. Full map in NOTES.md.
 * - Crash-safe write order: grain data, then GT, then redundant GT (sparse.ts). The descriptor
 *   gets a new CID before the first data write of a session (so a crash never leaves changed
 *   content under an old CID that a child trusts); a separate descriptor file is replaced
 *   atomically (write a temporary file, then rename), an embedded one is rewritten in place
 *   within its reserved sectors.
 * - While open read-write every sparse extent has uncleanShutdown = 1; close sets it back to 0
 *   after flushing, as VMware and VirtualBox do (QEMU ignores the byte).
 * - Producer quirks: QEMU writes CIDs without zero padding; VMware's split extents are 4192256
 *   sectors, QEMU's 4194304 (we read any size from the extent lines); QEMU never reads the
 *   embedded extent line, VirtualBox addresses by it, so we keep it equal to the header capacity.
 * - Untrusted names: extent file names that are absolute, contain "..", or resolve to a device
 *   or outside the descriptor's folder are refused unless `allowExternalExtents` is set
 *   (CVE-2022-47951 and CVE-2024-4467 are this bug in other tools).
 */
import { basename, dirname, isAbsolute, join } from '../../core/names.js';
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE } from '../../core/ints.js';
import { writeAtomic, type Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { BackingLink, BlockExtent, Capabilities, CheckFinding, CheckOptions, CheckReport, DiskInfo, ExtentInfo, Geometry, Image, InPlaceOptions, InPlaceResult, OpenOptions } from '../types.js';
import { Descriptor, MAX_DESCRIPTOR_BYTES, hex8, looksLikeDescriptor, parseCid, type ExtentLine } from './descriptor.js';
import { FlatExtent, SparseFileExtent, ZeroExtent, type Extent } from './extents.js';
import { EsxSparseExtent } from './esx-sparse.js';
import { checkEsxExtent } from './esx-check.js';
import { SparseExtent } from './sparse.js';
import { NO_PARENT, SPLIT_EXTENT_SECTORS as SPLIT_SECTORS, newCid, vmwareGeometry, writeFreshSparse } from './layout.js';
import { COWD_MAGIC, SESPARSE_CONST_MAGIC, SPARSE_MAGIC } from './structs.js';

export const VMDK_CREATE_TYPES = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'vmfs', 'streamOptimized'] as const;

export const VMDK_CAPABILITIES: Capabilities = Object.freeze({
  write: 'native',
  blockStatus: 'native',
  zero: 'emulate',
  metadata: true,
  createTypes: ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'vmfs'],
  differencing: true,
  differencingSameSize: true,
  parentLink: 'identity',
  identityFollowsContent: true,
  split: true,
  // hosted sparse types (monolithicSparse, twoGbMaxExtentSparse, their children); an opened
  // image of another type (flat, streamOptimized, ESX deltas) says 'none' (NOTES.md)
  discard: 'native',
  resize: 'grow',
  flush: 'concurrent',
  check: 'repair',
  compact: 'native',
  defragment: 'native',
});

const READ_ONLY_CAPABILITIES: Capabilities = Object.freeze({ ...VMDK_CAPABILITIES, write: 'none' });
const NOT_SPARSE: Pick<Capabilities, 'discard' | 'compact' | 'defragment'> = { discard: 'none', compact: 'none', defragment: 'none' };

export class VmdkImage implements Image {
  readonly format = 'vmdk';
  readonly capacity: number;
  readonly capabilities: Capabilities;
  private readonly starts: number[];
  private cidRenewed = false;
  private closed = false;

  /** set by open: where the descriptor and extents are named */
  namespace!: Namespace;
  private constructor(
    readonly path: string,
    private descriptor: Descriptor,
    private readonly extents: Extent[],
    /** the sparse extent holding an embedded descriptor (monolithic files) */
    private readonly embeddedIn: SparseExtent | undefined,
    /** false for a bare extent opened without any descriptor */
    private readonly descriptorWritable: boolean,
    readonly readOnly: boolean,
    preserveIdentity = false,
  ) {
    this.cidRenewed = preserveIdentity;
    let at = 0;
    this.starts = extents.map((e) => {
      const s = at;
      at += e.length;
      return s;
    });
    this.capacity = at;
    const caps = readOnly ? READ_ONLY_CAPABILITIES : VMDK_CAPABILITIES;
    // discard, compact and defragment rearrange hosted sparse (KDMV) grains: every extent must be one
    const hostedSparse = extents.length > 0 && extents.every((e) => e.sparse !== undefined && !e.sparse.compressed);
    // ESXi delta extents are checked, never repaired (esx-check.ts)
    const esx = extents.some((e) => e instanceof EsxSparseExtent);
    this.capabilities = hostedSparse ? caps : Object.freeze({ ...caps, ...NOT_SPARSE, ...(esx ? { check: 'detect' as const } : {}) });
  }

  static async open(ns: Namespace, path: string, opts: OpenOptions = {}): Promise<VmdkImage> {
    const image = await VmdkImage.openLink(ns, path, opts);
    // A delta link alone does not hold the whole disk: a partial-grain write would fill the
    // rest of the grain with zeros instead of the parent's bytes. Until the chain layer opens
    // parents, a child may only be inspected read-only. (A bad parentCID throws here too: the
    // image is closed on every way out.)
    let child: boolean;
    try {
      child = !image.readOnly && image.parentCid !== NO_PARENT && !opts.cowByCaller;
    } catch (err) {
      await image.close().catch(() => {});
      throw err;
    }
    if (child) {
      await image.close().catch(() => {});
      throw new DiskError('PARTIALCHAIN', 'this disk is a child (redo log / snapshot delta): open its chain (without singleLink) to write to it, or open this link read-only to inspect it', {
        path,
        field: 'parentCID',
        found: image.descriptor.get('parentCID'),
      });
    }
    return image;
  }

  get type(): string {
    return this.descriptor.get('createType') ?? 'unknown';
  }

  get clusterSize(): number {
    return Math.max(SECTOR_SIZE, ...this.extents.map((e) => e.grainBytes ?? 0));
  }

  backing(): BackingLink | undefined {
    if (this.parentCid === NO_PARENT) return undefined;
    const hint = this.descriptor.get('parentFileNameHint');
    if (hint === undefined) throw new DiskError('OPENPARENT', 'child disk has a parentCID but no parentFileNameHint', { path: this.path, field: 'parentFileNameHint' });
    return { hint, format: 'vmdk', parentId: hex8(this.parentCid) };
  }

  identity(): string | undefined {
    const cid = parseCid(this.descriptor.get('CID'), this.path);
    return cid === undefined ? undefined : hex8(cid);
  }

  /** Point this link at another parent (rebase / repair a broken link), or make it a base. */
  async setBacking(link: { hint: string; parentId: string } | undefined): Promise<void> {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    if (!this.descriptorWritable) throw new DiskError('NOTSUPPORTED', 'this extent has no descriptor to record a parent in', { path: this.path });
    await this.changeDescriptor((d) => {
      d.set('parentCID', link ? hex8(parseCid(link.parentId, this.path, 'parentCID')!) : hex8(NO_PARENT));
      if (link) d.set('parentFileNameHint', link.hint);
      else d.remove('parentFileNameHint');
    });
  }

  async setIdentity(id: string): Promise<void> {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    const cid = parseCid(id, this.path, 'CID')!;
    await this.changeDescriptor((d) => {
      d.set('CID', hex8(cid));
      const long = d.ddb('longContentID');
      if (long !== undefined && /^[0-9a-fA-F]{32}$/.test(long)) d.setDdb('longContentID', long.slice(0, 24).toLowerCase() + hex8(cid));
    });
    this.cidRenewed = true;
  }

  /** Drop every grain of every sparse extent (the link then holds nothing). */
  async makeEmpty(): Promise<void> {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    if (this.extents.some((e) => !e.sparse)) throw new DiskError('NOTSUPPORTED', 'only sparse links can be emptied', { path: this.path });
    for (const s of this.writableSparse) await s.clear();
  }

  private get parentCid(): number {
    return parseCid(this.descriptor.get('parentCID'), this.path, 'parentCID') ?? NO_PARENT;
  }

  private static async openLink(ns: Namespace, path: string, opts: OpenOptions = {}): Promise<VmdkImage> {
    const image = await VmdkImage.openLinkIn(ns, path, opts);
    image.namespace = ns;
    return image;
  }

  private static async openLinkIn(ns: Namespace, path: string, opts: OpenOptions): Promise<VmdkImage> {
    const readOnly = !!opts.readOnly;
    const store = await ns.open(path, { write: !readOnly });
    const opened: ByteStore[] = [store];
    try {
      const size = await store.size();
      const head = await store.readZeroPadded(0, Math.min(Math.max(size, 0), 4096));
      const magic = head.length >= 4 ? head.readUInt32LE(0) : 0;
      if (magic === SPARSE_MAGIC) return await VmdkImage.openMonolithic(path, store, readOnly, !!opts.preserveIdentity, !!opts.forCheck);
      if (magic === COWD_MAGIC || (head.length >= 8 && head.readBigUInt64LE(0) === SESPARSE_CONST_MAGIC)) {
        let esxStore: ByteStore = store;
        if (!readOnly && opts.forCheck) {
          // checked, never written: reopened read-only (a plain read-write open is refused)
          await store.close();
          opened.length = 0;
          esxStore = await ns.open(path);
          opened.push(esxStore);
        }
        return await VmdkImage.openBareEsx(path, esxStore, magic === COWD_MAGIC ? 'VMFSSPARSE' : 'SESPARSE', esxStore.readOnly);
      }
      if (!looksLikeDescriptor(head)) throw new DiskError('INVALIDDISK', 'not a VMDK file (no sparse header magic and no text descriptor)', { path });
      if (size > MAX_DESCRIPTOR_BYTES) {
        throw new DiskError('BADDESCRIPTOR', 'descriptor file is too large', { path, field: 'descriptor', expected: `<= ${MAX_DESCRIPTOR_BYTES} bytes`, found: size });
      }
      // The text ends at the first NUL: QEMU rewrites a descriptor file NUL-padded to whole sectors.
      const text = (await store.read(0, size)).toString('utf8').split('\0', 1)[0]!;
      await store.close();
      opened.length = 0;
      const descriptor = Descriptor.parse(text, path);
      const extents = await openExtents(ns, path, descriptor, opts, opened);
      const image = new VmdkImage(path, descriptor, extents, undefined, true, readOnly, !!opts.preserveIdentity);
      await image.markOpen();
      return image;
    } catch (err) {
      for (const s of opened) await s.close().catch(() => {});
      throw err;
    }
  }

  private static async openMonolithic(path: string, store: ByteStore, readOnly: boolean, preserveIdentity: boolean, forCheck: boolean): Promise<VmdkImage> {
    const sparse = await SparseExtent.open(store, { readOnly, forCheck });
    const text = await sparse.readEmbeddedDescriptor();
    let descriptor: Descriptor;
    let writable = true;
    if (text === undefined || text.trim() === '') {
      // A bare sparse extent (e.g. one -s001 file opened alone): describe it ourselves.
      writable = false;
      descriptor = Descriptor.build({
        cid: NO_PARENT - 1,
        createType: sparse.compressed ? 'streamOptimized' : 'monolithicSparse',
        extents: [{ access: 'RW', sectorCount: sparse.capacityBytes / SECTOR_SIZE, type: 'SPARSE', fileName: basename(path), offsetSectors: 0 }],
        ddb: [],
      });
    } else {
      descriptor = Descriptor.parse(text, path);
    }
    const lines = descriptor.extents();
    if (lines.length !== 1 || (lines[0]!.type !== 'SPARSE' && lines[0]!.type !== 'VMFSSPARSE')) {
      throw new DiskError('BADDESCRIPTOR', 'a monolithic sparse file must describe exactly one SPARSE extent (itself)', { path, field: 'extents', found: lines.length });
    }
    const line = lines[0]!;
    if (line.sectorCount * SECTOR_SIZE > sparse.capacityBytes) {
      throw new DiskError('CORRUPT', 'extent line is larger than the sparse header capacity', { path, field: 'capacity', expected: `>= ${line.sectorCount} sectors`, found: sparse.capacityBytes / SECTOR_SIZE });
    }
    // The embedded extent line names the file itself; whatever name it carries, the data is here.
    const extent = new SparseFileExtent(line, sparse, path, !readOnly && line.access === 'RW');
    const image = new VmdkImage(path, descriptor, [extent], writable ? sparse : undefined, writable, readOnly || sparse.readOnly || line.access !== 'RW', preserveIdentity);
    await image.markOpen();
    return image;
  }

  /**
   * A COWD or SESparse file opened without its descriptor (as a bare -s001 file can be): it is
   * described as a link of its own, with no parent, so unallocated grains read as zeros. QEMU
   * cannot open these files alone; the descriptor (`-000001.vmdk`) is the normal way in.
   */
  private static async openBareEsx(path: string, store: ByteStore, type: 'VMFSSPARSE' | 'SESPARSE', readOnly: boolean): Promise<VmdkImage> {
    // the line's size is not known before the header is read: open with a provisional line
    const provisional: ExtentLine = { access: 'RDONLY', sectorCount: 1, type, fileName: basename(path), offsetSectors: 0 };
    const open = type === 'VMFSSPARSE' ? EsxSparseExtent.openCowd : EsxSparseExtent.openSeSparse;
    const probe = await open(provisional, store, { readOnly });
    const sectors = probe.capacityBytes / SECTOR_SIZE;
    const descriptor = Descriptor.build({
      cid: NO_PARENT - 1,
      createType: type === 'VMFSSPARSE' ? 'vmfsSparse' : 'seSparse',
      extents: [{ ...provisional, access: 'RW', sectorCount: sectors }],
      ddb: [],
    });
    const extent = probe.withLine(descriptor.extents()[0]!);
    return new VmdkImage(path, descriptor, [extent], undefined, false, true);
  }

  private get sparseExtents(): SparseExtent[] {
    return this.extents.flatMap((e) => (e.sparse ? [e.sparse] : []));
  }

  /** sparse extents this session may write: opened writable and RW in the descriptor */
  private get writableSparse(): SparseExtent[] {
    return this.extents.flatMap((e) => (e.sparse && !e.sparse.readOnly && e.line.access === 'RW' ? [e.sparse] : []));
  }

  private async markOpen(): Promise<void> {
    if (this.readOnly) return;
    for (const s of this.writableSparse) await s.setUncleanShutdown(true);
  }

  // ------------------------------------------------------------------ I/O

  private extentIndex(offset: number): number {
    // binary search: last extent whose start <= offset
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  async read(into: Buffer, offset: number): Promise<void> {
    let pos = 0;
    const parts: Promise<void>[] = [];
    while (pos < into.length) {
      const at = offset + pos;
      const i = this.extentIndex(at);
      const e = this.extents[i]!;
      if (e.line.access === 'NOACCESS') throw new DiskError('PERMISSIONS', 'extent is NOACCESS', { path: e.path ?? this.path, offset: at });
      const within = at - this.starts[i]!;
      const n = Math.min(e.length - within, into.length - pos);
      parts.push(e.read(into.subarray(pos, pos + n), within));
      pos += n;
    }
    await Promise.all(parts);
  }

  async write(data: Buffer, offset: number): Promise<void> {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    // Refuse before anything changes: a write that fails on an RDONLY or ZERO extent must
    // not have renewed the CID (children of this link would no longer match it).
    for (let i = this.extentIndex(offset); i < this.extents.length && this.starts[i]! < offset + data.length; i++) {
      const e = this.extents[i]!;
      if (e.line.type === 'ZERO') throw new DiskError('PERMISSIONS', 'cannot write to a ZERO extent', { path: this.path, offset: this.starts[i] });
      if (e.line.access !== 'RW') throw new DiskError('RDONLY', `extent is ${e.line.access}`, { path: e.path ?? this.path });
    }
    if (!this.cidRenewed) await this.renewCid();
    let pos = 0;
    while (pos < data.length) {
      const at = offset + pos;
      const i = this.extentIndex(at);
      const e = this.extents[i]!;
      const within = at - this.starts[i]!;
      const n = Math.min(e.length - within, data.length - pos);
      await e.write(data.subarray(pos, pos + n), within);
      pos += n;
    }
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const out: BlockExtent[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const i = this.extentIndex(pos);
      const e = this.extents[i]!;
      const start = this.starts[i]!;
      const n = Math.min(start + e.length, end) - pos;
      for (const r of await e.status(pos - start, n)) {
        const last = out[out.length - 1];
        if (last && last.state === r.state && last.offset + last.length === r.offset + start) last.length += r.length;
        else out.push({ offset: r.offset + start, length: r.length, state: r.state });
      }
      pos += n;
    }
    return out;
  }

  async flush(): Promise<void> {
    for (const e of this.extents) await e.flush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    let first: unknown;
    try {
      if (!this.readOnly) {
        await this.flush();
        for (const s of this.writableSparse) await s.setUncleanShutdown(false);
        await this.flush();
      }
    } catch (err) {
      first = err;
    }
    for (const e of this.extents) {
      try {
        await e.close();
      } catch (err) {
        first ??= err;
      }
    }
    if (first) throw first;
  }

  // ------------------------------------------------------------------ descriptor

  /** A new content ID on the first change of a session (NOTES.md §2.7). */
  private async renewCid(): Promise<void> {
    if (this.descriptorWritable) {
      await this.changeDescriptor((d) => {
        const cid = newCid();
        d.set('CID', hex8(cid));
        const long = d.ddb('longContentID');
        if (long !== undefined && /^[0-9a-fA-F]{32}$/.test(long)) d.setDdb('longContentID', long.slice(0, 24).toLowerCase() + hex8(cid));
      });
    }
    this.cidRenewed = true;
  }

  /** Apply `change` to a copy of the descriptor, save it, and only then make it current. */
  private async changeDescriptor(change: (d: Descriptor) => void): Promise<void> {
    const next = Descriptor.parse(this.descriptor.toString(), this.path);
    change(next);
    const text = next.toString();
    if (this.embeddedIn) await this.embeddedIn.writeEmbeddedDescriptor(text);
    else await writeAtomic(this.namespace, this.path, Buffer.from(text, 'utf8'));
    this.descriptor = next;
  }

  metadataKeys(): string[] {
    return this.descriptor.ddbKeys();
  }

  readMetadata(key: string): string | undefined {
    return this.descriptor.ddb(key);
  }

  async writeMetadata(key: string, value: string): Promise<void> {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    if (!this.descriptorWritable) throw new DiskError('NOTSUPPORTED', 'this extent has no descriptor to hold metadata', { path: this.path });
    await this.changeDescriptor((d) => d.setDdb(key, value));
  }

  async check(opts: CheckOptions): Promise<CheckReport> {
    const findings: CheckFinding[] = [];
    let leakedBytes = 0;
    const dryRun = opts.repair && !!opts.dryRun;
    // ESXi delta extents are only ever checked: a repair of a disk made of them writes nothing
    const esx = this.extents.some((e) => e instanceof EsxSparseExtent);
    if (opts.repair && !dryRun && this.readOnly && !esx) throw new DiskError('RDONLY', 'a repair needs the disk opened read-write (or a dry run)', { path: this.path });
    for (const e of this.extents) {
      if (e instanceof EsxSparseExtent) {
        const r = await checkEsxExtent(e);
        for (const f of r.findings) {
          const found: CheckFinding = { ...f, message: this.extents.length > 1 ? `${e.path}: ${f.message}` : f.message };
          if (opts.repair && f.kind !== 'warning') {
            found.message += ` (not repairable by vdkit: ESXi ${e.kind} files are repaired on ESXi, vmkfstools -x repair)`;
            found.notRepairable = true;
          }
          findings.push(found);
        }
        leakedBytes += r.leakedBytes;
        continue;
      }
      if (!e.sparse) continue;
      const r = await e.sparse.check(opts.repair, dryRun);
      for (const f of r.findings) findings.push({ ...f, message: this.extents.length > 1 ? `${e.path}: ${f.message}` : f.message });
      leakedBytes += r.leakedBytes;
    }
    return { path: this.path, format: 'vmdk', findings, leakedBytes, ...(dryRun ? { dryRun: true } : {}) };
  }

  /**
   * Rename this disk's files for a new descriptor path (VixDiskLib_Rename's file part): extents
   * named after the old stem get the new stem, extent lines are rewritten, and the descriptor is
   * written at its new name **last**, so a rename stopped half-way never leaves a disk at the new
   * name that is not whole. The image must be open read-write; it is closed afterwards.
   */
  async renameTo(newPath: string, opts: { keepOld?: boolean } = {}): Promise<void> {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    const oldStem = basename(this.path).replace(/\.vmdk$/i, '');
    const newStem = basename(newPath).replace(/\.vmdk$/i, '');
    const renamed = (name: string) => (name.startsWith(oldStem) ? newStem + name.slice(oldStem.length) : name);
    // a name of a previous, killed rename may be in the way of a hard link
    const ns = this.namespace;
    const move = async (from: string, to: string) => {
      if (!opts.keepOld) return ns.rename(from, to);
      await ns.remove(to);
      if (!(await ns.link(from, to))) await ns.rename(from, to);
    };
    if (this.embeddedIn) {
      // monolithic: the embedded extent line names the file itself (libvmdk and VirtualBox open it by that name)
      await this.changeDescriptor((d) => d.setExtents(d.extents().map((e) => ({ ...e, fileName: basename(newPath) }))));
      await this.close();
      await move(this.path, newPath);
      return;
    }
    const next = Descriptor.parse(this.descriptor.toString(), this.path);
    next.setExtents(next.extents().map((e) => (e.fileName === undefined ? e : { ...e, fileName: renamed(e.fileName) })));
    const moves = this.extents.flatMap((e) => (e.path && e.line.fileName && renamed(e.line.fileName) !== e.line.fileName ? [[e.path, join(dirname(e.path), renamed(basename(e.path)))] as const] : []));
    if (opts.keepOld) {
      // only this disk's own file (a link a stopped rename left) may be replaced: another
      // file of a new extent name belongs to someone else; checked before anything moves
      for (const [from, to] of moves) {
        if ((await ns.kind(to)) !== 'file') continue;
        const there = await ns.stat(to);
        const mine = await ns.stat(from).catch(() => undefined);
        if (!mine || mine.id !== there.id) {
          throw new DiskError('FILEEXISTS', `${basename(to)} exists and is not a file of this disk: the renamed extent would replace it`, { path: to, field: 'extent', found: basename(to) });
        }
      }
    }
    await this.close();
    for (const [from, to] of moves) await move(from, to);
    await writeAtomic(ns, newPath, Buffer.from(next.toString(), 'utf8'));
    if (!opts.keepOld && ns.absolute(newPath) !== ns.absolute(this.path)) await ns.remove(this.path);
  }

  /**
   * Grow the disk in place (VixDiskLib_Grow, vmware-vdiskmanager -x). The files take the new
   * size first, invisibly (the descriptor still gives the old extent sizes); the descriptor
   * (atomic replace, or the embedded one rewritten in place) is the last write and makes it
   * visible. Split disks get new extent files (-sNNN / -fNNN, split size as VMware's); a single
   * flat extent is extended; a monolithic sparse file grows its grain directory (sparse.ts
   * growTo). Closes the image.
   */
  async resize(newCapacity: number): Promise<void> {
    try {
      if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
      if (!this.descriptorWritable) throw new DiskError('NOTSUPPORTED', 'a bare extent has no descriptor to record a new size in', { path: this.path });
      if (this.sparseExtents.some((x) => x.compressed)) {
        throw new DiskError('NOTSUPPORTED', 'streamOptimized disks cannot be resized in place: convert to monolithicSparse, resize, and convert back', { path: this.path, field: 'createType', found: this.type });
      }
      if (newCapacity < this.capacity) throw new DiskError('CANTSHRINK', 'VMDK disks can only grow', { path: this.path, field: 'size', found: newCapacity });
      const grow = (newCapacity - this.capacity) / SECTOR_SIZE;
      const lines = this.descriptor.extents();
      const last = this.extents[this.extents.length - 1]!;
      const split = /^twoGbMaxExtent/i.test(this.type) || this.extents.length > 1;
      if (last.line.type === 'ZERO' || last.line.access !== 'RW') throw new DiskError('NOTSUPPORTED', `the last extent is ${last.line.type} ${last.line.access}: nothing to grow`, { path: this.path, field: 'extents' });
      if (split) {
        const sparse = !!last.sparse;
        const stem = basename(this.path).replace(/\.vmdk$/i, '');
        const dir = dirname(this.path);
        let n = lines.length;
        const used = new Set(lines.map((l) => l.fileName));
        for (let left = grow; left > 0; ) {
          const sectors = Math.min(left, SPLIT_SECTORS);
          let name: string;
          do name = `${stem}-${sparse ? 's' : 'f'}${String(++n).padStart(3, '0')}.vmdk`;
          while (used.has(name));
          // a file of this name is no extent of the disk (a killed resize left it): overwrite
          const store = await this.namespace.create(join(dir, name), { overwrite: true });
          try {
            if (sparse) await writeFreshSparse(store, sectors, {});
            else await store.truncate(sectors * SECTOR_SIZE);
            await store.flush();
          } finally {
            await store.close();
          }
          lines.push({ access: 'RW', sectorCount: sectors, type: sparse ? 'SPARSE' : last.line.type, fileName: name, offsetSectors: 0 });
          left -= sectors;
        }
      } else {
        const line = lines[lines.length - 1]!;
        if (last.sparse) {
          await last.sparse.growTo(line.sectorCount + grow);
        } else {
          const flat = (last as FlatExtent).store;
          const oldEnd = line.offsetSectors * SECTOR_SIZE + line.sectorCount * SECTOR_SIZE;
          // bytes past the old extent end are dropped first, so the new range reads zeros
          if ((await flat.size()) > oldEnd) await flat.truncate(oldEnd);
          await flat.truncate(oldEnd + grow * SECTOR_SIZE);
          await flat.flush();
        }
        lines[lines.length - 1] = { ...line, sectorCount: line.sectorCount + grow };
      }
      await this.changeDescriptor((d) => {
        d.setExtents(lines);
        if (d.ddb('geometry.cylinders') !== undefined) {
          const g = vmwareGeometry(newCapacity / SECTOR_SIZE, d.ddb('adapterType') ?? 'ide', this.type === 'vmfs');
          d.setDdb('geometry.cylinders', String(g.cylinders));
          d.setDdb('geometry.heads', String(g.heads));
          d.setDdb('geometry.sectors', String(g.sectors));
        }
      });
    } finally {
      await this.close();
    }
  }

  private refuseRelayout(what: string): SparseExtent[] {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    // a bare extent file says nothing of a parent: treating a child's extent as a base would
    // turn its zero grains into "ask the parent"
    if (!this.descriptorWritable) throw new DiskError('NOTSUPPORTED', `${what} needs the disk's descriptor, not a bare extent file`, { path: this.path, field: 'descriptor' });
    if (this.capabilities.compact === 'none') {
      throw new DiskError('NOTSUPPORTED', `${what} needs a hosted sparse VMDK (monolithicSparse, twoGbMaxExtentSparse or a child of one); this disk is ${this.type}`, { path: this.path, field: 'createType', found: this.type });
    }
    return this.writableSparse;
  }

  private async fileBytes(): Promise<number> {
    let n = 0;
    for (const f of new Set([this.path, ...this.extents.flatMap((e) => (e.path ? [e.path] : []))])) n += (await this.namespace.stat(f)).size;
    return n;
  }

  /**
   * Discard (VDDiscardRanges, TRIM) in place: whole grains become GTE 0 in a base; in a child
   * GTE 1 where the header is version 2 with the zeroed-grain flag, else zeros are written (a
   * version-1 child has no marker that hides its parent). Parts of grains read zeros afterwards;
   * a part of a grain a child does not hold must come through the chain (ops/discard.ts).
   */
  async discard(offset: number, length: number): Promise<void> {
    this.refuseRelayout('discard');
    if (length === 0) return;
    if (!this.cidRenewed) await this.renewCid();
    const hasParent = this.parentCid !== NO_PARENT;
    for (let pos = offset; pos < offset + length; ) {
      const i = this.extentIndex(pos);
      const e = this.extents[i]!;
      const within = pos - this.starts[i]!;
      const n = Math.min(e.length - within, offset + length - pos);
      if (e.line.access !== 'RW') throw new DiskError('RDONLY', `extent is ${e.line.access}`, { path: e.path ?? this.path });
      await e.sparse!.discard(within, n, { hasParent, limit: e.length });
      pos += n;
    }
  }

  /**
   * Compact (VixDiskLib_Shrink, vmware-vdiskmanager -k) extent by extent: sparse.ts compact.
   * The content does not change, so the CID stays and children stay valid.
   */
  async compact(opts: InPlaceOptions = {}): Promise<InPlaceResult> {
    const sparse = this.refuseRelayout('compact');
    const hasParent = this.parentCid !== NO_PARENT;
    return this.relayout(sparse, opts, (s, onGrain) => s.compact({ hasParent, signal: opts.signal, onGrain }));
  }

  /**
   * Defragment (VixDiskLib_Defragment, vmware-vdiskmanager -d): grains in virtual order in each
   * extent file. A hosted split disk's extent lines fix which file holds which virtual range,
   * so no grain can move to another (lower-numbered) extent: each file is put in order alone.
   */
  async defragment(opts: InPlaceOptions = {}): Promise<InPlaceResult> {
    const sparse = this.refuseRelayout('defragment');
    return this.relayout(sparse, opts, (s, onGrain) => s.defragment({ signal: opts.signal, onGrain }));
  }

  private async relayout(sparse: SparseExtent[], opts: InPlaceOptions, run: (s: SparseExtent, onGrain: () => void) => Promise<void>): Promise<InPlaceResult> {
    const fileBytesBefore = await this.fileBytes();
    let total = 0;
    for (const s of sparse) total += await s.dataGrainCount();
    let done = 0;
    opts.onProgress?.(0, total);
    for (const s of sparse) {
      await run(s, () => {
        done++;
        opts.onProgress?.(done, total);
      });
      await s.flush();
    }
    return { fileBytesBefore, fileBytesAfter: await this.fileBytes() };
  }

  /** The descriptor as text (what `vdkit info --descriptor` shows). */
  descriptorText(): string {
    return this.descriptor.toString();
  }

  async info(): Promise<DiskInfo> {
    const d = this.descriptor;
    const files = [this.path, ...this.extents.flatMap((e) => (e.path && e.path !== this.path ? [e.path] : []))];
    let fileSize = 0;
    let diskSize = 0;
    for (const f of new Set(files)) {
      const st = await this.namespace.stat(f);
      fileSize += st.size;
      diskSize += st.allocated ?? st.size;
    }
    let allocatedBytes = 0;
    for (const r of await this.blockStatus(0, this.capacity)) if (r.state === 'data') allocatedBytes += r.length;
    const extents: ExtentInfo[] = this.extents.map((e, i) => ({
      path: e.path,
      type: e.line.type,
      access: e.line.access,
      length: e.length,
      virtualOffset: this.starts[i]!,
      fileOffset: e.line.offsetSectors * SECTOR_SIZE,
    }));
    const parentCid = parseCid(d.get('parentCID'), this.path, 'parentCID');
    const cid = parseCid(d.get('CID'), this.path);
    const sparse = this.sparseExtents[0];
    return {
      format: 'vmdk',
      type: this.type,
      capacity: this.capacity,
      sectors: this.capacity / SECTOR_SIZE,
      adapterType: d.ddb('adapterType'),
      geometry: geometry(d, 'cylinders', 'heads', 'sectors'),
      biosGeometry: geometry(d, 'biosCylinders', 'biosHeads', 'biosSectors'),
      numLinks: 1,
      parent: d.get('parentFileNameHint'),
      cid: cid === undefined ? undefined : hex8(cid),
      parentCid: parentCid === undefined ? undefined : hex8(parentCid),
      uuid: d.ddb('uuid'),
      hwVersion: d.ddb('virtualHWVersion'),
      version: sparse?.version,
      extents,
      allocatedBytes,
      fileSize,
      diskSize,
      readOnly: this.readOnly,
      compressed: sparse?.compressed ?? false,
      files: [...new Set(files)],
    };
  }
}

function geometry(d: Descriptor, c: string, h: string, s: string): Geometry | undefined {
  const cyl = d.ddb(`geometry.${c}`);
  const heads = d.ddb(`geometry.${h}`);
  const sectors = d.ddb(`geometry.${s}`);
  if (cyl === undefined || heads === undefined || sectors === undefined) return undefined;
  const g = { cylinders: Number(cyl), heads: Number(heads), sectors: Number(sectors) };
  return Object.values(g).every((v) => Number.isSafeInteger(v) && v >= 0) ? g : undefined;
}



/** Resolve an extent file name from a descriptor, refusing names that escape its folder. */
export async function resolveExtentPath(ns: Namespace, descriptorPath: string, fileName: string, allowExternal: boolean): Promise<string> {
  const dir = dirname(ns.absolute(descriptorPath));
  const where = { path: descriptorPath, field: 'extent file name', found: fileName };
  if (fileName === '' || fileName.includes('\0')) throw new DiskError('BADDESCRIPTOR', 'empty or invalid extent file name', where);
  const external = isAbsolute(fileName) || /^[A-Za-z]:[\\/]/.test(fileName) || fileName.split(/[\\/]/).includes('..');
  if (external && !allowExternal) {
    throw new DiskError('EXTERNALEXTENT', 'extent file name is absolute or leaves the descriptor\'s folder (pass allowExternalExtents to allow)', where);
  }
  const full = ns.resolve(descriptorPath, fileName);
  const kind = await ns.kind(full);
  if (kind === 'missing') throw new DiskError('FILENOTFOUND', 'extent file not found', { ...where, path: full });
  if (!allowExternal) {
    if (kind === 'device' || kind === 'other' || kind === 'dir') throw new DiskError('EXTERNALEXTENT', 'extent names a device or something other than a regular file', where);
    // Any component may be a symbolic link (the file or a folder on the way): compare real names.
    const real = await ns.realName(full);
    const realDir = await ns.realName(dir);
    if (!real.startsWith(realDir === '/' ? '/' : realDir + '/') || (await ns.kind(real)) !== 'file') {
      throw new DiskError('EXTERNALEXTENT', 'extent resolves (through a symbolic link) to a file outside the descriptor\'s folder', where);
    }
  }
  return full;
}

/** the namespace's identity of a name ("same file"), or undefined when it cannot be had */
async function fileId(ns: Namespace, name: string): Promise<string | undefined> {
  return (await ns.stat(name).catch(() => undefined))?.id;
}

async function openExtents(ns: Namespace, path: string, descriptor: Descriptor, opts: OpenOptions, opened: ByteStore[]): Promise<Extent[]> {
  const readOnly = !!opts.readOnly;
  const out: Extent[] = [];
  // Each file once (by device and inode, so hard links and symbolic links count too), and never
  // the descriptor itself: two extents on one file would each allocate grains at its end, and an
  // acknowledged write of one would read back as the other's bytes. FLAT lines may share a file
  // in disjoint byte ranges, or in any ranges when at most one of them can be written.
  const seen = new Map<string, { line: ExtentLine; n: number }[]>();
  const self = await fileId(ns, path);
  if (self) seen.set(self, [{ line: { access: 'RW', sectorCount: 1, type: 'ZERO', offsetSectors: 0 }, n: 0 }]);
  const lines = descriptor.extents();
  for (let n = 1; n <= lines.length; n++) {
    const line = lines[n - 1]!;
    if (line.type === 'ZERO') {
      out.push(new ZeroExtent(line, path));
      continue;
    }
    if (line.type === 'VMFSRDM' || line.type === 'VMFSRAW') {
      throw new DiskError('NOTSUPPORTED', `${line.type} extents are not supported`, { path, field: 'extent type', found: line.type });
    }
    const file = await resolveExtentPath(ns, path, line.fileName!, !!opts.allowExternalExtents);
    const id = await fileId(ns, file);
    if (id) {
      const key = id;
      const flat = (l: ExtentLine) => l.type === 'FLAT' || l.type === 'VMFS';
      const earlier = seen.get(key) ?? [];
      for (const prev of earlier) {
        if (prev.n === 0) throw new DiskError('BADDESCRIPTOR', `extent ${n} (${JSON.stringify(line.fileName)}) is the descriptor file itself`, { path, field: 'extent file name', found: line.fileName });
        // flat lines alias nothing when disjoint, and overlap harmlessly when no write can go through both
        const harmless = flat(prev.line) && flat(line) && (disjoint(prev.line, line) || readOnly || prev.line.access !== 'RW' || line.access !== 'RW');
        if (!harmless) {
          throw new DiskError('BADDESCRIPTOR', `extents ${prev.n} and ${n} name the same file ${JSON.stringify(line.fileName)}: each extent file may be listed once`, { path, field: 'extent file name', found: line.fileName });
        }
      }
      earlier.push({ line, n });
      seen.set(key, earlier);
    }
    const extentReadOnly = readOnly || line.access !== 'RW';
    // ESXi delta extents are never written: a check (and repair) opens them read-only, any
    // other read-write open is refused (EsxSparseExtent)
    const store = await ns.open(file, { write: !(extentReadOnly || (line.type === 'SESPARSE' && !!opts.forCheck)) });
    opened.push(store);
    if (line.type === 'FLAT' || line.type === 'VMFS') {
      out.push(new FlatExtent(line, store, file, line.offsetSectors * SECTOR_SIZE, await store.size(), extentReadOnly));
      continue;
    }
    if (line.type === 'SESPARSE') {
      out.push(await EsxSparseExtent.openSeSparse(line, store, { readOnly: store.readOnly }));
      continue;
    }
    // SPARSE or VMFSSPARSE: a hosted sparse (KDMV) or an ESX sparse (COWD) file; like QEMU, we
    // go by the magic, not by the extent type
    const head = await store.readZeroPadded(0, 4);
    if (head.readUInt32LE(0) === COWD_MAGIC) {
      let ro: ByteStore = store;
      if (!store.readOnly && opts.forCheck) {
        await store.close();
        opened.pop();
        ro = await ns.open(file);
        opened.push(ro);
      }
      out.push(await EsxSparseExtent.openCowd(line, ro, { readOnly: ro.readOnly }));
      continue;
    }
    const sparse = await SparseExtent.open(store, { readOnly: extentReadOnly, forCheck: !!opts.forCheck });
    if (line.sectorCount * SECTOR_SIZE > sparse.capacityBytes) {
      throw new DiskError('CORRUPT', 'extent line is larger than the sparse extent capacity', { path: file, field: 'capacity', expected: `>= ${line.sectorCount} sectors`, found: sparse.capacityBytes / SECTOR_SIZE });
    }
    out.push(new SparseFileExtent(line, sparse, file, !extentReadOnly));
  }
  return out;
}

/** two FLAT/VMFS lines on one file that share no byte */
function disjoint(a: ExtentLine, b: ExtentLine): boolean {
  return a.offsetSectors + a.sectorCount <= b.offsetSectors || b.offsetSectors + b.sectorCount <= a.offsetSectors;
}

export type { ExtentLine };
