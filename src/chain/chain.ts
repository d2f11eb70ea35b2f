/**
 * Chains: a child (redo log, snapshot delta) records only what changed since it was made, and
 * reads fall through its unallocated ranges to its parent. A ChainImage is itself an Image.
 *
 * Design notes
 * - Links are validated when the chain is opened, top first: the parent is found from the
 *   child's hint (relative to the child's folder), its identity must equal what the child
 *   recorded (VMDK: parentCID == parent CID, else CID_MISMATCH), VMDK capacities must match,
 *   hosted and ESX-style VMDK links must not mix (INVALIDCHAIN), a link met twice is a cycle
 *   (INVALIDCHAIN) and more than `maxDepth` links is TOOMANYREDO. Parents are opened read-only.
 * - Writes go to the top only. A write that covers part of a cluster the top does not hold yet
 *   is widened to whole clusters filled from the chain below (copy-on-write), so the top never
 *   holds a cluster whose other bytes were silently zero-filled.
 * - Block status names the link that holds each range (depth 0 = top); ranges no link holds
 *   stay unallocated (they read as zeros), and zeros past the end of a shorter parent read as
 *   zeros too.
 * - Parent hints come from image files: with `untrusted`, absolute hints and hints that climb
 *   out of the child's folder ("..") are refused (EXTERNALEXTENT); by default they are followed,
 *   since chains a user made often point to a base in another folder.
 */
import { basename, dirname, isAbsolute, join, relative } from '../core/names.js';
import { DiskError, runAll } from '../core/errors.js';
import type { Namespace } from '../storage/namespace.js';
import { readJournal } from './journal.js';
import type { BackingChange, BackingLink, BlockExtent, Capabilities, DiskInfo, Image, ImageMaintenance, MappedExtent, OpenOptions, ParentFacts } from '../formats/types.js';
import { appendMappedRange } from '../formats/common/extents.js';

export const DEFAULT_MAX_DEPTH = 255;

/**
 * How the layers above a driver open one link: the driver's facts (OpenOptions, except the
 * identity one, which follows from `preserveIdentity`) and the policy this layer applies.
 */
export interface LinkOpenOptions extends Omit<OpenOptions, 'updateIdentityOnWrite'> {
  /** format name; detected from the content when omitted */
  format?: string;
  /**
   * The caller does copy-on-write from the parent itself (the chain layer), or writes only what
   * the link alone holds (check, compact, rebase, commit). Without it a read-write open of a
   * child is refused (PARTIALCHAIN, in disk.ts openLinkIn): alone, a partial write to a unit
   * the child lacks could only zero-fill the rest of it instead of copying the parent's bytes.
   */
  cowByCaller?: boolean;
  /**
   * Writes that do not change what the disk reads as (commit, rebase, merge, compact) keep the
   * image's identity (VMDK CID, VDI modification UUID, VHDX DataWriteGuid), so its children
   * stay valid: the driver is opened with `updateIdentityOnWrite: false`.
   */
  preserveIdentity?: boolean;
}

export interface ChainOpenOptions extends LinkOpenOptions {
  /**
   * Open only this link, not its parents (VixDiskLib's SINGLE_LINK): unallocated ranges read
   * as zeros. (A link opener, openLinkIn, always opens one link.)
   */
  singleLink?: boolean;
  /** refuse parent hints that are absolute or leave the child's folder */
  untrusted?: boolean;
  /** most links a chain may have (default 255) */
  maxDepth?: number;
  /**
   * parent files the caller knows about (VDI records no parent path): a link whose parent
   * identity matches one of these uses it before any hint or folder search
   */
  parentPaths?: string[];
}

/** What the chain layer needs to know about formats (supplied by the registry). */
export interface ChainFormats {
  open: LinkOpener;
  /** file extensions of a format, to search a folder for a parent by identity */
  extensions(format: string): readonly string[];
  /** a child must have exactly its parent's size */
  sameSize(format: string): boolean;
  /** the family of a link's type: links of different families never stack (VMDK ESXi vs hosted) */
  family(format: string, type: string): string | undefined;
}

/** How the chain layer opens one link (provided by the registry, so chain/ stays format-free). */
export type LinkOpener = (ns: Namespace, path: string, opts: LinkOpenOptions) => Promise<Image>;

/** Try each hint (as written, then by its file name beside the child); the first that exists wins. */
async function findByHints(ns: Namespace, childPath: string, hints: readonly string[], untrusted: boolean): Promise<{ path?: string; tried: string[] }> {
  const dir = dirname(ns.absolute(childPath));
  const tried: string[] = [];
  for (const hint of hints) {
    if (hint === '') continue;
    const windowsAbsolute = /^[A-Za-z]:[\\/]/.test(hint) || hint.startsWith('\\\\');
    // qemu-style protocol names (json:{...}, nbd://, http://) are never interpreted: a trusted
    // image gets them as a plain file name, an untrusted one is refused (CVE-2024-4467 class)
    if (untrusted && !windowsAbsolute && /^[A-Za-z][A-Za-z0-9+.-]*:/.test(hint)) {
      throw new DiskError('EXTERNALEXTENT', 'parent name is a protocol or JSON specification (refused for untrusted images)', { path: childPath, field: 'parent hint', found: hint });
    }
    const escapes = isAbsolute(hint) || windowsAbsolute || hint.split(/[\\/]/).includes('..');
    if (untrusted && escapes) {
      throw new DiskError('EXTERNALEXTENT', "parent hint is absolute or leaves the child's folder (refused for untrusted images)", { path: childPath, field: 'parent hint', found: hint });
    }
    const candidates: string[] = [];
    if (!windowsAbsolute) candidates.push(ns.resolve(childPath, hint.replace(/\\/g, '/')));
    // a chain moved as a whole folder (or a Windows path): the parent beside the child under its own name
    candidates.push(join(dir, basename(hint.replace(/\\/g, '/'))));
    for (const c of candidates) {
      if (tried.includes(c)) continue;
      tried.push(c);
      if ((await ns.kind(c)) !== 'missing') return { path: c, tried };
    }
  }
  return { tried };
}

/** Look for a parent by identity: among the caller's files, then in the child's folder. */
async function findByIdentity(ns: Namespace, childPath: string, link: BackingLink, formats: ChainFormats, given: readonly string[], searchFolder: boolean, ignoreChecksums: boolean): Promise<string | undefined> {
  if (link.parentId === undefined) return undefined;
  const want = link.parentId.toLowerCase();
  const candidates = [...given];
  if (searchFolder && link.format) {
    const dir = dirname(ns.absolute(childPath));
    const exts = formats.extensions(link.format);
    for (const n of (await ns.list(dir)).slice(0, 2000)) if (exts.some((e) => n.toLowerCase().endsWith(`.${e}`))) candidates.push(join(dir, n));
  }
  const self = ns.absolute(childPath);
  for (const c of candidates) {
    if (ns.absolute(c) === self || (await ns.kind(c)) !== 'file') continue;
    let img: Image | undefined;
    try {
      img = await formats.open(ns, c, { readOnly: true, format: link.format, ignoreChecksums });
      if (img.identity()?.toLowerCase() === want) return c;
    } catch {
      // not an image of that format: keep looking
    } finally {
      await img?.close().catch(() => {});
    }
  }
  return undefined;
}

/** The hint a child stores for its parent: the bare name when they share a folder, a relative path below, else absolute. */
export function hintFor(ns: Namespace, childPath: string, parentPath: string, absolute = false): string {
  const parent = ns.absolute(parentPath);
  if (absolute) return parent;
  const rel = relative(dirname(ns.absolute(childPath)), parent);
  return rel.startsWith('..') || isAbsolute(rel) ? parent : rel;
}

/** What a child's driver may record about `parent` besides its name and identity (see ParentFacts). */
export function parentFacts(parent: Image): ParentFacts {
  return { format: parent.format, record: parent.linkRecord?.() };
}

/**
 * The BackingChange that points the link at `childPath` to `parentPath` (rebase, commit,
 * rename): the hint, the parent's identity and facts, read from the parent opened alone here,
 * so the child's driver never opens its parent.
 */
export async function backingTo(ns: Namespace, childPath: string, parentPath: string, parentId: string, formats: ChainFormats, opts: { absoluteHint?: boolean; format?: string } = {}): Promise<BackingChange> {
  const change: BackingChange = { hint: hintFor(ns, childPath, parentPath, opts.absoluteHint), parentId, parentName: ns.absolute(parentPath) };
  let parent: Image | undefined;
  try {
    parent = await formats.open(ns, parentPath, { readOnly: true, format: opts.format });
    change.parent = parentFacts(parent);
  } catch {
    // the parent cannot be read (yet): drivers record what they can without it
  } finally {
    await parent?.close().catch(() => {});
  }
  return change;
}

/** Open `path` and every parent below it. A lone base comes back as the plain image. */
export async function openChain(ns: Namespace, path: string, opts: ChainOpenOptions, formats: ChainFormats): Promise<Image> {
  const maxDepth = opts.maxDepth ?? DEFAULT_MAX_DEPTH;
  const layers: Image[] = [];
  const seen = new Set<string>();
  try {
    let img = await formats.open(ns, path, { ...opts, cowByCaller: true });
    // a recovery open (ignoreChecksums, read-only only) reaches every link: a damaged parent
    // is as readable as a damaged top, and parents are always opened read-only
    const ignoreChecksums = !!opts.ignoreChecksums && img.readOnly;
    layers.push(img);
    seen.add(await ns.realName(path));
    let at = path;
    for (;;) {
      const link = img.backing();
      if (!link) break;
      if (layers.length >= maxDepth) {
        throw new DiskError('TOOMANYREDO', `chain is deeper than ${maxDepth} links`, { path, field: 'depth', expected: `<= ${maxDepth}` });
      }
      const parentPath = await locateParent(ns, at, link, { ...opts, ignoreChecksums }, formats);
      const real = await ns.realName(parentPath);
      if (seen.has(real)) throw new DiskError('INVALIDCHAIN', 'the chain loops back on itself', { path: at, field: 'parent hint', found: parentPath });
      seen.add(real);
      let parent: Image;
      try {
        parent = await formats.open(ns, parentPath, { readOnly: true, allowExternalExtents: opts.allowExternalExtents, allowRawDevice: opts.allowRawDevice, format: link.format, cowByCaller: true, ignoreChecksums });
      } catch (err) {
        if (err instanceof DiskError && err.code !== 'FILENOTFOUND') throw err;
        throw new DiskError('OPENPARENT', `cannot open parent ${parentPath}`, { path: at, field: 'parent hint', found: link.hint }, { cause: err });
      }
      layers.push(parent);
      await checkLink(ns, at, img, parentPath, parent, link.parentId, formats);
      img = parent;
      at = parentPath;
    }
  } catch (err) {
    for (const l of layers) await l.close().catch(() => {});
    throw err;
  }
  return layers.length === 1 ? layers[0]! : new ChainImage(layers);
}

/** The parent of the link at `childPath`: caller-given files by identity, the hints, then the folder by identity. */
export async function locateParent(ns: Namespace, childPath: string, link: BackingLink, opts: { untrusted?: boolean; parentPaths?: string[]; ignoreChecksums?: boolean }, formats: ChainFormats): Promise<string> {
  if (opts.parentPaths?.length) {
    const given = await findByIdentity(ns, childPath, link, formats, opts.parentPaths, false, !!opts.ignoreChecksums);
    if (given) return given;
  }
  const found = await findByHints(ns, childPath, [link.hint, ...(link.hints ?? [])], !!opts.untrusted);
  if (found.path) return found.path;
  if (link.searchByIdentity) {
    const byId = await findByIdentity(ns, childPath, link, formats, [], true, !!opts.ignoreChecksums);
    if (byId) return byId;
  }
  // A link that records no path (VDI), and the caller named exactly one other file as a parent:
  // that file is the one meant, so the link check can say what is wrong with it (CID_MISMATCH)
  // instead of "not found".
  if (opts.parentPaths?.length && link.hint === '' && !link.hints?.length) {
    const others = opts.parentPaths.filter((p) => ns.absolute(p) !== ns.absolute(childPath));
    if (others.length === 1 && (await ns.kind(others[0]!)) === 'file') return others[0]!;
  }
  const where = found.tried.length > 0 ? `looked for ${found.tried.join(' and ')}` : 'the image records no parent path';
  const how = link.searchByIdentity ? `; no image in ${dirname(ns.absolute(childPath))} has identity ${link.parentId}` : '';
  throw new DiskError('OPENPARENT', `parent not found (${where}${how})`, { path: childPath, field: 'parent hint', found: link.hint, expected: found.tried[0] });
}

/**
 * The checks a child and its parent must pass to stack (identity, same family, same size where
 * the format needs it); also used by a container that stacks links one by one (vd/).
 */
export async function checkLink(ns: Namespace, childPath: string, child: Image, parentPath: string, parent: Image, parentId: string | undefined, formats: ChainFormats): Promise<void> {
  if (parentId !== undefined) {
    const id = parent.identity();
    if ((id === undefined || id.toLowerCase() !== parentId.toLowerCase()) && !(await committedFrom(ns, parentPath, parentId, id))) {
      throw new DiskError('CID_MISMATCH', `child was made from content ${parentId} but its parent ${parentPath} now has ${id ?? 'none'}`, {
        path: childPath,
        field: 'parentCID',
        expected: parentId,
        found: id,
        parent: parentPath,
      });
    }
  }
  const cs = child.format === parent.format ? formats.family(child.format, child.type) : undefined;
  const ps = child.format === parent.format ? formats.family(parent.format, parent.type) : undefined;
  if (cs && ps && cs !== ps) {
    throw new DiskError('INVALIDCHAIN', undefined, { path: childPath, field: 'createType', found: `${child.type} over ${parent.type}`, parent: parentPath });
  }
  if (child.format === parent.format && formats.sameSize(child.format) && child.capacity !== parent.capacity) {
    throw new DiskError('INVALIDCHAIN', `the parent ${parentPath} is ${parent.capacity} bytes and this child ${child.capacity}: a ${child.format} child must be its parent's size`, { path: childPath, field: 'capacity', expected: parent.capacity, found: child.capacity, parent: parentPath });
  }
}

/**
 * An interrupted commit gives the base its new identity before the links above it are re-pointed;
 * its journal vouches for the change, so the chain stays readable until the commit is resumed.
 */
async function committedFrom(ns: Namespace, parentPath: string, expected: string, found: string | undefined): Promise<boolean> {
  const j = await readJournal(ns, parentPath).catch(() => undefined);
  return !!j && found !== undefined && j.phase === 'switch' && j.oldId.toLowerCase() === expected.toLowerCase() && j.newId.toLowerCase() === found.toLowerCase();
}

export class ChainImage implements Image {
  private closed = false;
  /** present when the top link can discard (Image.discard) */
  readonly discard?: (offset: number, length: number) => Promise<void>;
  constructor(
    /** top first */
    readonly layers: Image[],
  ) {
    if (layers[0]?.discard) this.discard = (offset, length) => this.discardThrough(offset, length);
  }

  /**
   * The top discards the whole clusters; the parts of clusters at either end are written as
   * zeros through the chain, which copies the rest of such a cluster up from below first (the
   * top, opened for a caller that does copy-on-write, would not).
   */
  private async discardThrough(offset: number, length: number): Promise<void> {
    const g = this.clusterSize;
    const end = offset + length;
    const first = Math.min(Math.ceil(offset / g) * g, end);
    const last = end === this.capacity ? end : Math.max(Math.floor(end / g) * g, first);
    if (first > offset) await this.write(Buffer.alloc(first - offset), offset);
    if (last > first) await this.top.discard!(first, last - first);
    if (end > last) await this.write(Buffer.alloc(end - last), last);
  }

  private get top(): Image {
    return this.layers[0]!;
  }
  get format(): string {
    return this.top.format;
  }
  get type(): string {
    return this.top.type;
  }
  get path(): string {
    return this.top.path;
  }
  get namespace(): Namespace {
    return this.top.namespace;
  }
  get capacity(): number {
    return this.top.capacity;
  }
  get readOnly(): boolean {
    return this.top.readOnly;
  }
  get capabilities(): Capabilities {
    return this.top.capabilities;
  }
  get clusterSize(): number {
    return this.top.clusterSize;
  }
  backing() {
    return this.top.backing();
  }
  identity() {
    return this.top.identity();
  }
  setIdentity(id: string): Promise<void> {
    return this.top.setIdentity(id);
  }
  setBacking(link: BackingChange | undefined): Promise<void> {
    return this.top.setBacking(link);
  }
  linkRecord() {
    return this.top.linkRecord?.() ?? {};
  }
  makeEmpty(): Promise<void> {
    return this.top.makeEmpty();
  }
  /** none: maintenance acts on one link, which the operations open alone */
  maintenance(): ImageMaintenance {
    return {};
  }

  async read(into: Buffer, offset: number): Promise<void> {
    await this.readFrom(0, into, offset);
  }

  /** Read through link `depth` and below; bytes past a link's end read as zeros. */
  private async readFrom(depth: number, into: Buffer, offset: number): Promise<void> {
    const layer = this.layers[depth]!;
    const inside = Math.max(0, Math.min(into.length, layer.capacity - offset));
    if (inside < into.length) into.fill(0, inside);
    if (inside === 0) return;
    if (depth === this.layers.length - 1) return layer.read(into.subarray(0, inside), offset);
    const parts: Promise<void>[] = [];
    for (const r of await layer.blockStatus(offset, inside)) {
      const sub = into.subarray(r.offset - offset, r.offset - offset + r.length);
      if (r.state === 'data') parts.push(layer.read(sub, r.offset));
      else if (r.state === 'zero') sub.fill(0);
      else parts.push(this.readFrom(depth + 1, sub, r.offset));
    }
    await Promise.all(parts);
  }

  async write(data: Buffer, offset: number): Promise<void> {
    const g = this.clusterSize;
    const end = offset + data.length;
    let start = offset;
    let stop = end;
    // widen to whole clusters where a partly written cluster is not in the top yet
    const headCluster = Math.floor(offset / g) * g;
    if (headCluster < offset && (await this.topLacks(headCluster, g))) start = headCluster;
    const tailCluster = Math.floor((end - 1) / g) * g;
    if (end < Math.min(tailCluster + g, this.capacity) && (await this.topLacks(tailCluster, g))) stop = Math.min(tailCluster + g, this.capacity);
    if (start === offset && stop === end) return this.top.write(data, offset);
    const buf = Buffer.allocUnsafe(stop - start);
    if (start < offset) await this.read(buf.subarray(0, Math.min(g, stop - start)), start);
    if (stop > end) {
      const from = Math.max(tailCluster, start);
      await this.read(buf.subarray(from - start), from);
    }
    data.copy(buf, offset - start);
    await this.top.write(buf, start);
  }

  private async topLacks(clusterStart: number, g: number): Promise<boolean> {
    const len = Math.min(g, this.capacity - clusterStart);
    const st = await this.top.blockStatus(clusterStart, len);
    return st.some((r) => r.state === 'unallocated');
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const out: BlockExtent[] = [];
    const push = (r: BlockExtent) => {
      const last = out[out.length - 1];
      if (last && last.state === r.state && last.depth === r.depth && last.offset + last.length === r.offset) last.length += r.length;
      else out.push({ ...r });
    };
    const walk = async (depth: number, off: number, len: number): Promise<void> => {
      const layer = this.layers[depth]!;
      const inside = Math.max(0, Math.min(len, layer.capacity - off));
      if (inside > 0) {
        for (const r of await layer.blockStatus(off, inside)) {
          if (r.state !== 'unallocated' || depth === this.layers.length - 1) push({ offset: r.offset, length: r.length, state: r.state, depth: r.state === 'unallocated' ? undefined : depth });
          else await walk(depth + 1, r.offset, r.length);
        }
      }
      if (inside < len) push({ offset: off + inside, length: len - inside, state: 'zero', depth });
    };
    await walk(0, offset, length);
    return out;
  }

  /**
   * blockStatus with file offsets, every range with the depth of the link that answers for it;
   * a range no link stores gets the bottom link's depth (the last one asked: qemu-img map's depth)
   */
  async mapStatus(offset: number, length: number): Promise<MappedExtent[]> {
    const out: MappedExtent[] = [];
    const bottom = this.layers.length - 1;
    const walk = async (depth: number, off: number, len: number): Promise<void> => {
      const layer = this.layers[depth]!;
      const inside = Math.max(0, Math.min(len, layer.capacity - off));
      if (inside > 0) {
        const rs = layer.mapStatus ? await layer.mapStatus(off, inside) : await layer.blockStatus(off, inside);
        for (const r of rs) {
          if (r.state !== 'unallocated' || depth === bottom) appendMappedRange(out, { ...r, depth });
          else await walk(depth + 1, r.offset, r.length);
        }
      }
      if (inside < len) appendMappedRange(out, { offset: off + inside, length: len - inside, state: 'zero', depth });
    };
    await walk(0, offset, length);
    return out;
  }

  flush(): Promise<void> {
    return this.top.flush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await runAll(this.layers.map((l) => () => l.close()));
  }

  async info(): Promise<DiskInfo> {
    const i = await this.top.info();
    return { ...i, numLinks: this.layers.length, chain: this.layers.map((l) => l.path) };
  }

  metadataKeys(): string[] {
    return this.top.metadataKeys();
  }
  readMetadata(key: string): string | undefined {
    return this.top.readMetadata(key);
  }
  writeMetadata(key: string, value: string): Promise<void> {
    return this.top.writeMetadata(key, value);
  }
}
