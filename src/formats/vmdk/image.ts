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
 * - Files: this one is the data path (read, write, block status, flush, close), the descriptor
 *   change and metadata; open.ts opens and validates, links.ts holds parent and identity,
 *   maintain.ts check/rename/resize/discard/compact/defragment (NOTES.md "Files").
 */
import { appendExtent, appendMapped, dataBytes } from '../common/extents.js';
import { DiskError, runAll } from '../../core/errors.js';
import { SECTOR_SIZE } from '../../core/ints.js';
import { writeAtomic, type Namespace } from '../../storage/namespace.js';
import type { BackingLink, BlockExtent, Capabilities, CheckOptions, DiskInfo, ExtentInfo, Geometry, Image, ImageMaintenance, InPlaceOptions, MappedExtent } from '../types.js';
import { Descriptor, hex8, parseCid, type ExtentLine } from './descriptor.js';
import type { Extent } from './extents.js';
import { EsxSparseExtent } from './esx-sparse.js';
import type { SparseExtent } from './sparse.js';
import { NO_PARENT, newCid } from './layout.js';
import type { LinkState } from './state.js';
import { backingLink, identityOf, makeEmptyLink, setBackingLink, setIdentityOf } from './links.js';

/** maintain.ts, loaded when first needed: opening a disk to read it does not load its code */
const maintain = () => import('./maintain.js');
import { VMDK_CAPABILITIES } from './driver.js';
import { vmdkAmendWrites } from './properties.js';
import { lastAtOrBelow } from '../../binary/search.js';

export const VMDK_CREATE_TYPES = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'vmfs', 'streamOptimized'] as const;


const READ_ONLY_CAPABILITIES: Capabilities = Object.freeze({ ...VMDK_CAPABILITIES, write: 'none' });
const NOT_SPARSE: Pick<Capabilities, 'discard' | 'compact' | 'defragment'> = { discard: 'none', compact: 'none', defragment: 'none' };

export class VmdkImage implements Image, LinkState {
  readonly format = 'vmdk';
  readonly capacity: number;
  readonly capabilities: Capabilities;
  readonly starts: number[];
  cidRenewed = false;
  private closed = false;

  /** set by open: where the descriptor and extents are named */
  namespace!: Namespace;
  /** built by open.ts (openVmdk), which parses the descriptor and opens the extents */
  constructor(
    readonly path: string,
    public descriptor: Descriptor,
    readonly extents: Extent[],
    /** the sparse extent holding an embedded descriptor (monolithic files) */
    readonly embeddedIn: SparseExtent | undefined,
    /** false for a bare extent opened without any descriptor */
    readonly descriptorWritable: boolean,
    readonly readOnly: boolean,
    /** OpenOptions.updateIdentityOnWrite false: the first write keeps the CID */
    keepCid = false,
  ) {
    this.cidRenewed = keepCid;
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

  get type(): string {
    return this.descriptor.get('createType') ?? 'unknown';
  }

  get clusterSize(): number {
    return Math.max(SECTOR_SIZE, ...this.extents.map((e) => e.grainBytes ?? 0));
  }

  // ------------------------------------------------------------------ links (links.ts)

  backing(): BackingLink | undefined {
    return backingLink.call(this);
  }

  identity(): string | undefined {
    return identityOf.call(this);
  }

  /** Point this link at another parent (rebase / repair a broken link), or make it a base. */
  setBacking(link: { hint: string; parentId: string } | undefined): Promise<void> {
    return setBackingLink.call(this, link);
  }

  setIdentity(id: string): Promise<void> {
    return setIdentityOf.call(this, id);
  }

  /** Drop every grain of every sparse extent (the link then holds nothing). */
  makeEmpty(): Promise<void> {
    return makeEmptyLink.call(this);
  }

  get parentCid(): number {
    return parseCid(this.descriptor.get('parentCID'), this.path, 'parentCID') ?? NO_PARENT;
  }

  get sparseExtents(): SparseExtent[] {
    return this.extents.flatMap((e) => (e.sparse ? [e.sparse] : []));
  }

  /** sparse extents this session may write: opened writable and RW in the descriptor */
  get writableSparse(): SparseExtent[] {
    return this.extents.flatMap((e) => (e.sparse && !e.sparse.readOnly && e.line.access === 'RW' ? [e.sparse] : []));
  }

  async markOpen(): Promise<void> {
    if (this.readOnly) return;
    for (const s of this.writableSparse) await s.setUncleanShutdown(true);
  }

  // ------------------------------------------------------------------ I/O

  extentIndex(offset: number): number {
    return lastAtOrBelow(this.starts.length, (i) => this.starts[i]!, offset);
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
    // the map without the host offsets (the extents' own status merged alike)
    const out: BlockExtent[] = [];
    for (const r of await this.mapStatus(offset, length)) appendExtent(out, r.offset, r.length, r.state);
    return out;
  }

  async mapStatus(offset: number, length: number): Promise<MappedExtent[]> {
    const out: MappedExtent[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const i = this.extentIndex(pos);
      const e = this.extents[i]!;
      const start = this.starts[i]!;
      const n = Math.min(start + e.length, end) - pos;
      const rs: MappedExtent[] = e.mapStatus ? await e.mapStatus(pos - start, n) : await e.status(pos - start, n);
      for (const r of rs) appendMapped(out, r.offset + start, r.length, r.state, r.file, r.fileOffset);
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
    await runAll([() => this.markClean(), ...this.extents.map((e) => () => e.close())]);
  }

  /** a read-write session ends: the data durable, then the sparse extents' clean-shutdown flags */
  private async markClean(): Promise<void> {
    if (this.readOnly) return;
    await this.flush();
    for (const s of this.writableSparse) await s.setUncleanShutdown(false);
    await this.flush();
  }

  // ------------------------------------------------------------------ descriptor

  /** A new content ID on the first change of a session (NOTES.md §2.7). */
  async renewCid(): Promise<void> {
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
  async changeDescriptor(change: (d: Descriptor) => void): Promise<void> {
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

  // ------------------------------------------------------------------ maintenance (maintain.ts)

  discard(offset: number, length: number): Promise<void> {
    return maintain().then((m) => m.discardLink.call(this, offset, length));
  }

  /** check; rename of the files for a new descriptor path and growing in place close the image */
  maintenance(): ImageMaintenance {
    return {
      check: async (opts: CheckOptions) => (await maintain()).checkLink.call(this, opts),
      renameTo: async (newPath: string, opts: { keepOld?: boolean } = {}) => (await maintain()).renameLink.call(this, newPath, opts),
      resize: async (newCapacity: number) => (await maintain()).resizeLink.call(this, newCapacity),
      compact: async (opts: InPlaceOptions = {}) => (await maintain()).compactLink.call(this, opts),
      defragment: async (opts: InPlaceOptions = {}) => (await maintain()).defragmentLink.call(this, opts),
      amend: async (options: Readonly<Record<string, string>>) => {
        const writes = vmdkAmendWrites(this.path, options);
        if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
        if (!this.descriptorWritable) throw new DiskError('NOTSUPPORTED', 'this extent has no descriptor to hold adapter type or hardware version', { path: this.path });
        // one descriptor rewrite for all keys
        if (writes.length > 0) await this.changeDescriptor((d) => writes.forEach(([k, v]) => d.setDdb(k, v)));
      },
    };
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
    const allocatedBytes = dataBytes(await this.blockStatus(0, this.capacity));
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
      clusterSize: sparse?.grainBytes,
      // VMDK parents are VMDK, and QEMU says so
      parentFormat: d.get('parentFileNameHint') === undefined ? undefined : 'vmdk',
      specific: {
        cid: cid ?? 0,
        'parent-cid': parentCid ?? 0xffffffff,
        'create-type': this.type,
        extents: this.extents.flatMap((e) => (e.path === undefined ? [] : [{ 'virtual-size': e.length, filename: e.path, ...(e.grainBytes ? { 'cluster-size': e.grainBytes } : {}), format: e.line.type }])),
      },
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

export type { ExtentLine };
