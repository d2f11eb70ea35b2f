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
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { DiskError } from '../core/errors.js';
import { fsx } from '../storage/file.js';
import { readJournal } from './journal.js';
import type { BlockExtent, Capabilities, DiskInfo, Image, OpenOptions } from '../formats/types.js';

export const DEFAULT_MAX_DEPTH = 255;

export interface ChainOpenOptions extends OpenOptions {
  /** refuse parent hints that are absolute or leave the child's folder */
  untrusted?: boolean;
  /** most links a chain may have (default 255) */
  maxDepth?: number;
}

/** How the chain layer opens one link (provided by the registry, so chain/ stays format-free). */
export type LinkOpener = (path: string, opts: OpenOptions & { format?: string }) => Promise<Image>;

const ESX_TYPES = new Set(['vmfs', 'vmfssparse', 'vmfsthin', 'vmfspreallocated', 'vmfseagerzeroedthick', 'vmfsthick', 'sesparse', 'vmfsraw', 'vmfsrawdevicemap', 'vmfspassthroughrawdevicemap']);

function styleOf(img: Image): 'esx' | 'hosted' | undefined {
  if (img.format !== 'vmdk') return undefined;
  return ESX_TYPES.has(img.type.toLowerCase()) ? 'esx' : 'hosted';
}

/** Where a child's parent hint points, or an error saying why it may not be followed. */
export async function resolveParentPath(childPath: string, hint: string, untrusted: boolean): Promise<string> {
  const dir = dirname(resolve(childPath));
  const windowsAbsolute = /^[A-Za-z]:[\\/]/.test(hint) || hint.startsWith('\\\\');
  const escapes = isAbsolute(hint) || windowsAbsolute || hint.split(/[\\/]/).includes('..');
  if (untrusted && escapes) {
    throw new DiskError('EXTERNALEXTENT', 'parent hint is absolute or leaves the child\'s folder (refused for untrusted images)', { path: childPath, field: 'parent hint', found: hint });
  }
  const candidates: string[] = [];
  if (windowsAbsolute) candidates.push(join(dir, hint.split(/[\\/]/).pop()!));
  else candidates.push(resolve(dir, hint));
  // a chain moved as a whole folder: the parent sits next to the child under its own name
  const beside = join(dir, basename(hint.replace(/\\/g, '/')));
  if (!candidates.includes(beside)) candidates.push(beside);
  for (const c of candidates) if ((await fsx.kind(c)) !== 'missing') return c;
  throw new DiskError('OPENPARENT', `parent not found (looked for ${candidates.join(' and ')})`, { path: childPath, field: 'parent hint', found: hint, expected: candidates[0] });
}

/** The hint a child stores for its parent: the bare name when they share a folder, a relative path below, else absolute. */
export function hintFor(childPath: string, parentPath: string, absolute = false): string {
  if (absolute) return resolve(parentPath);
  const rel = relative(dirname(resolve(childPath)), resolve(parentPath));
  return rel.startsWith('..') || isAbsolute(rel) ? resolve(parentPath) : rel;
}

/** Open `path` and every parent below it. A lone base comes back as the plain image. */
export async function openChain(path: string, opts: ChainOpenOptions & { format?: string }, openLink: LinkOpener): Promise<Image> {
  const maxDepth = opts.maxDepth ?? DEFAULT_MAX_DEPTH;
  const layers: Image[] = [];
  const seen = new Set<string>();
  try {
    let img = await openLink(path, { ...opts, cowByCaller: true });
    layers.push(img);
    seen.add(await fsx.realpath(path));
    let at = path;
    for (;;) {
      const link = img.backing();
      if (!link) break;
      if (layers.length >= maxDepth) {
        throw new DiskError('TOOMANYREDO', `chain is deeper than ${maxDepth} links`, { path, field: 'depth', expected: `<= ${maxDepth}` });
      }
      const parentPath = await resolveParentPath(at, link.hint, !!opts.untrusted);
      const real = await fsx.realpath(parentPath);
      if (seen.has(real)) throw new DiskError('INVALIDCHAIN', 'the chain loops back on itself', { path: at, field: 'parent hint', found: parentPath });
      seen.add(real);
      let parent: Image;
      try {
        parent = await openLink(parentPath, { readOnly: true, allowExternalExtents: opts.allowExternalExtents, format: link.format, cowByCaller: true });
      } catch (err) {
        if (err instanceof DiskError && err.code !== 'FILENOTFOUND') throw err;
        throw new DiskError('OPENPARENT', `cannot open parent ${parentPath}`, { path: at, field: 'parent hint', found: link.hint }, { cause: err });
      }
      layers.push(parent);
      await checkLink(at, img, parentPath, parent, link.parentId);
      img = parent;
      at = parentPath;
    }
  } catch (err) {
    for (const l of layers) await l.close().catch(() => {});
    throw err;
  }
  return layers.length === 1 ? layers[0]! : new ChainImage(layers);
}

async function checkLink(childPath: string, child: Image, parentPath: string, parent: Image, parentId: string | undefined): Promise<void> {
  if (parentId !== undefined) {
    const id = parent.identity();
    if ((id === undefined || id.toLowerCase() !== parentId.toLowerCase()) && !(await committedFrom(parentPath, parentId, id))) {
      throw new DiskError('CID_MISMATCH', `child was made from content ${parentId} but its parent ${parentPath} now has ${id ?? 'none'}`, {
        path: childPath,
        field: 'parentCID',
        expected: parentId,
        found: id,
        parent: parentPath,
      });
    }
  }
  const cs = styleOf(child);
  const ps = styleOf(parent);
  if (cs && ps && cs !== ps) {
    throw new DiskError('INVALIDCHAIN', undefined, { path: childPath, field: 'createType', found: `${child.type} over ${parent.type}`, parent: parentPath });
  }
  if (child.format === 'vmdk' && parent.format === 'vmdk' && child.capacity !== parent.capacity) {
    throw new DiskError('INVALIDCHAIN', 'child and parent describe disks of different sizes', { path: childPath, field: 'capacity', expected: parent.capacity, found: child.capacity, parent: parentPath });
  }
}

/**
 * An interrupted commit gives the base its new identity before the links above it are re-pointed;
 * its journal vouches for the change, so the chain stays readable until the commit is resumed.
 */
async function committedFrom(parentPath: string, expected: string, found: string | undefined): Promise<boolean> {
  const j = await readJournal(parentPath).catch(() => undefined);
  return !!j && found !== undefined && j.phase === 'switch' && j.oldId.toLowerCase() === expected.toLowerCase() && j.newId.toLowerCase() === found.toLowerCase();
}

export class ChainImage implements Image {
  private closed = false;
  constructor(
    /** top first */
    readonly layers: Image[],
  ) {}

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
  setBacking(link: { hint: string; parentId: string } | undefined): Promise<void> {
    return this.top.setBacking(link);
  }
  makeEmpty(): Promise<void> {
    return this.top.makeEmpty();
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

  flush(): Promise<void> {
    return this.top.flush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    let first: unknown;
    for (const l of this.layers) {
      try {
        await l.close();
      } catch (err) {
        first ??= err;
      }
    }
    if (first) throw first;
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
