/**
 * A tar archive (an OVA) as a read-only namespace: each regular member is a name whose store
 * is a window onto the archive's bytes, so a driver opens `disk1.vmdk` inside `vm.ova` as it
 * opens a file, and a VMDK descriptor finds its extents beside it. Only the headers are read
 * (one 512-byte block per member); no member's data is copied.
 *
 * Untrusted input: each header's checksum and numbers are checked (binary/tar.ts), a member
 * whose data runs past the end of the archive is refused with its name and `size`, pax and GNU
 * long-name records are capped before they are read, and the member count is capped, so a
 * header never sizes an allocation. Names are kept as written; `safeMemberName` decides what
 * may be opened or extracted.
 */
import { DiskError } from '../core/errors.js';
import { normalize, resolveBeside } from '../core/names.js';
import { TAR_BLOCK, decodeTarHeader, isZeroBlock, parsePaxRecords, safeMemberName, decodeTarNumber, type TarKind } from '../binary/tar.js';
import type { CacheMode, NameKind, NameStat, Namespace } from './namespace.js';
import type { ByteStore } from './store.js';

export interface TarMember {
  /** the name as the archive gives it (after pax `path` / GNU long names) */
  name: string;
  kind: TarKind;
  /** symlink or hardlink target */
  linkname: string;
  /** offset of the member's header block */
  headerOffset: number;
  /** offset of its data and its length */
  offset: number;
  size: number;
  mode: number;
  mtime: number;
}

/** caps that keep a hostile header from sizing an allocation or a loop */
export const TAR_LIMITS = Object.freeze({
  /** pax extended header or GNU long name data */
  extendedHeader: 1024 * 1024,
  members: 65536,
});

/** Round a data length up to whole blocks. */
export const tarPadded = (n: number) => Math.ceil(n / TAR_BLOCK) * TAR_BLOCK;

/**
 * Every member of the archive in `store`, in order. `path` names the archive in errors. An
 * archive that ends without its two zero blocks is accepted (many writers stop after one), but
 * a header or data cut short is CORRUPT.
 */
export async function readTarIndex(store: ByteStore, path = store.name): Promise<TarMember[]> {
  const fileSize = await store.size();
  const out: TarMember[] = [];
  let at = 0;
  let pax = new Map<string, string>();
  let longName: string | undefined;
  let longLink: string | undefined;
  for (let index = 0; ; index++) {
    if (at + TAR_BLOCK > fileSize) {
      if (at === fileSize && (out.length > 0 || at > 0)) break;
      throw new DiskError('CORRUPT', at === 0 ? 'not a tar archive: shorter than one header block' : `tar header #${index + 1} is cut short by the end of the file`, { path, field: 'header', offset: at, expected: TAR_BLOCK, found: fileSize - at });
    }
    const block = await store.read(at, TAR_BLOCK);
    if (isZeroBlock(block)) break;
    if (index >= TAR_LIMITS.members) throw new DiskError('CORRUPT', `more than ${TAR_LIMITS.members} tar members`, { path, field: 'members', offset: at });
    const h = decodeTarHeader(block, { path, index, offset: at });
    const dataAt = at + TAR_BLOCK;
    const memberName = longName ?? pax.get('path') ?? h.name;
    let size = h.size;
    if (pax.has('size')) size = decodeDecimal(pax.get('size')!, { path, member: memberName });
    if (size > fileSize - dataAt) {
      throw new DiskError('CORRUPT', `tar member ${JSON.stringify(memberName)} runs past the end of the archive`, { path, member: memberName, field: 'size', expected: `<= ${fileSize - dataAt}`, found: size });
    }
    if (h.kind === 'pax' || h.kind === 'gnu-longname' || h.kind === 'gnu-longlink' || h.kind === 'pax-global') {
      if (size > TAR_LIMITS.extendedHeader) throw new DiskError('CORRUPT', `tar ${h.kind} header of ${size} bytes (at most ${TAR_LIMITS.extendedHeader})`, { path, member: memberName, field: 'size', found: size });
      const data = await store.read(dataAt, size);
      if (h.kind === 'pax') pax = parsePaxRecords(data, { path, member: memberName });
      else if (h.kind === 'gnu-longname') longName = data.toString('utf8').replace(/\0+$/, '');
      else if (h.kind === 'gnu-longlink') longLink = data.toString('utf8').replace(/\0+$/, '');
      // global pax records (comments, charset) say nothing a reader of OVAs needs
    } else {
      out.push({
        name: memberName,
        kind: h.kind,
        linkname: longLink ?? pax.get('linkpath') ?? h.linkname,
        headerOffset: at,
        offset: dataAt,
        // links and folders carry no data whatever their size field says
        size: h.kind === 'file' || h.kind === 'other' ? size : 0,
        mode: h.mode,
        mtime: pax.has('mtime') ? Math.floor(Number(pax.get('mtime'))) || h.mtime : h.mtime,
      });
      pax = new Map();
      longName = undefined;
      longLink = undefined;
    }
    at = dataAt + (h.kind === 'file' || h.kind === 'other' || h.kind === 'pax' || h.kind === 'pax-global' || h.kind.startsWith('gnu') ? tarPadded(size) : 0);
  }
  return out;
}

function decodeDecimal(text: string, where: { path: string; member: string }): number {
  if (!/^\d{1,16}$/.test(text) || !Number.isSafeInteger(Number(text))) throw new DiskError('CORRUPT', 'bad pax size', { ...where, field: 'size', found: text });
  return Number(text);
}

// re-exported for callers that parse a header stream themselves (ops/ova/stream.ts)
export { decodeTarNumber };

/** A read-only window [offset, offset+size) of another store, named `name`. */
export class SliceStore implements ByteStore {
  readonly readOnly = true;
  constructor(
    readonly name: string,
    private readonly inner: ByteStore,
    private readonly offset: number,
    private readonly length: number,
    private readonly ownsInner: boolean,
  ) {}

  async size(): Promise<number> {
    return this.length;
  }

  private check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.length) {
      throw new DiskError('OUTOFRANGE', `read past the end of archive member ${this.name}`, { path: this.name, offset, length, found: this.length });
    }
  }

  read(offset: number, length: number): Promise<Buffer> {
    this.check(offset, length);
    return this.inner.read(this.offset + offset, length);
  }

  readInto(into: Buffer, offset: number): Promise<void> {
    this.check(offset, into.length);
    return this.inner.readInto(into, this.offset + offset);
  }

  async readZeroPadded(offset: number, length: number): Promise<Buffer> {
    const n = Math.max(0, Math.min(length, this.length - offset));
    const out = Buffer.alloc(length);
    if (n > 0) await this.inner.readInto(out.subarray(0, n), this.offset + offset);
    return out;
  }

  private refuse(): never {
    throw new DiskError('RDONLY', 'members of an archive are read-only', { path: this.name });
  }
  async write(): Promise<void> {
    this.refuse();
  }
  async writev(): Promise<void> {
    this.refuse();
  }
  async truncate(): Promise<void> {
    this.refuse();
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {
    if (this.ownsInner) await this.inner.close();
  }
}

/**
 * The regular members of a tar archive as a read-only namespace. The archive is opened from
 * `outer` each time a member is opened (and closed with the member), so the namespace itself
 * holds nothing open. Members with unsafe names (absolute, `..`) are not reachable.
 */
export class TarNamespace implements Namespace {
  readonly cacheMode: CacheMode = 'writeback';
  private readonly files = new Map<string, TarMember>();
  /** names are absolute inside the archive ("/disk1.vmdk"), as the beside-file checks expect */
  private readonly dirs = new Set<string>(['/']);

  constructor(
    private readonly outer: Namespace,
    readonly archive: string,
    readonly members: readonly TarMember[],
  ) {
    for (const m of members) {
      const n = safeMemberName(m.name);
      if (n === undefined) continue;
      if (m.kind === 'file') this.files.set(`/${n}`, m);
      const parts = n.split('/');
      for (let i = 1; i < parts.length + (m.kind === 'dir' ? 1 : 0); i++) this.dirs.add(`/${parts.slice(0, i).join('/')}`);
    }
  }

  static async open(outer: Namespace, archive: string): Promise<TarNamespace> {
    const st = await outer.open(archive);
    try {
      return new TarNamespace(outer, archive, await readTarIndex(st, archive));
    } finally {
      await st.close();
    }
  }

  get label(): string {
    return `tar:${this.archive}`;
  }

  private key(name: string): string {
    return normalize(`/${name}`);
  }

  member(name: string): TarMember | undefined {
    return this.files.get(this.key(name));
  }

  async open(name: string, opts: { write?: boolean } = {}): Promise<ByteStore> {
    const m = this.member(name);
    if (!m) throw new DiskError('FILENOTFOUND', `no file ${JSON.stringify(name)} in ${this.archive}`, { path: `${this.archive}#${name}` });
    if (opts.write) throw new DiskError('RDONLY', 'members of an archive are read-only', { path: `${this.archive}#${name}` });
    const st = await this.outer.open(this.archive);
    return new SliceStore(`${this.archive}#${this.key(name).slice(1)}`, st, m.offset, m.size, true);
  }

  private refuse(name: string): never {
    throw new DiskError('RDONLY', 'an archive is read-only: extract it to change its files', { path: `${this.archive}#${name}` });
  }
  async create(name: string): Promise<ByteStore> {
    this.refuse(name);
  }
  async rename(from: string): Promise<void> {
    this.refuse(from);
  }
  async link(): Promise<boolean> {
    return false;
  }
  async remove(name: string): Promise<void> {
    this.refuse(name);
  }

  async list(dirName: string): Promise<string[]> {
    const d = this.key(dirName);
    if (!this.dirs.has(d)) throw new DiskError('FILENOTFOUND', undefined, { path: `${this.archive}#${dirName}` });
    const prefix = d === '/' ? '/' : `${d}/`;
    const out = new Set<string>();
    for (const n of [...this.files.keys(), ...this.dirs]) {
      if (n === d || !n.startsWith(prefix)) continue;
      out.add(n.slice(prefix.length).split('/')[0]!);
    }
    return [...out];
  }

  async stat(name: string): Promise<NameStat> {
    const m = this.member(name);
    if (!m) throw new DiskError('FILENOTFOUND', undefined, { path: `${this.archive}#${name}` });
    return { size: m.size, id: `${this.archive}#${m.headerOffset}`, mtimeMs: m.mtime * 1000, links: 1 };
  }

  async exists(name: string): Promise<boolean> {
    return this.member(name) !== undefined || this.dirs.has(this.key(name));
  }

  async kind(name: string): Promise<NameKind> {
    if (this.member(name)) return 'file';
    return this.dirs.has(this.key(name)) ? 'dir' : 'missing';
  }

  async realName(name: string): Promise<string> {
    return this.key(name);
  }

  absolute(name: string): string {
    return this.key(name);
  }

  resolve(base: string, relativeName: string): string {
    return resolveBeside(this.key(base), relativeName);
  }
}
