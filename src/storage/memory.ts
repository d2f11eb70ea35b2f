import { DiskError } from '../core/errors.js';
import { unitSpans } from '../core/ints.js';
import { dirname, isAbsolute, normalize, resolveBeside } from '../core/names.js';
import type { CacheMode, NameKind, NameStat, Namespace } from './namespace.js';
import type { ByteStore } from './store.js';

/**
 * A sparse in-memory store: 64 KiB pages, absent pages read as zeros. Used by tests as the
 * raw model and by callers who build images in memory.
 */
const PAGE = 65536;
let counter = 0;

export class MemoryStore implements ByteStore {
  readonly name: string;
  private pages = new Map<number, Buffer>();
  private length = 0;
  constructor(
    initialSize = 0,
    readonly readOnly = false,
  ) {
    this.name = `memory:${++counter}`;
    this.length = initialSize;
  }

  async size(): Promise<number> {
    return this.length;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    await this.readInto(buf, offset);
    return buf;
  }

  async readInto(into: Buffer, offset: number): Promise<void> {
    if (offset + into.length > this.length) {
      throw new DiskError('CORRUPT', 'unexpected end of file', { path: this.name, offset, length: into.length });
    }
    this.copyOut(into, offset);
  }

  async readZeroPadded(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    const avail = Math.max(0, Math.min(length, this.length - offset));
    if (avail > 0) this.copyOut(buf.subarray(0, avail), offset);
    return buf;
  }

  private copyOut(into: Buffer, offset: number): void {
    into.fill(0);
    for (const { index, within, pos, n } of unitSpans(offset, into.length, PAGE)) {
      this.pages.get(index)?.copy(into, pos, within, within + n);
    }
  }

  async write(offset: number, data: Buffer): Promise<void> {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.name });
    for (const { index, within, pos, n } of unitSpans(offset, data.length, PAGE)) {
      let page = this.pages.get(index);
      if (!page) {
        page = Buffer.alloc(PAGE);
        this.pages.set(index, page);
      }
      data.copy(page, within, pos, pos + n);
    }
    this.length = Math.max(this.length, offset + data.length);
  }

  async writev(offset: number, data: readonly Buffer[]): Promise<void> {
    let at = offset;
    for (const b of data) {
      await this.write(at, b);
      at += b.length;
    }
  }

  async truncate(length: number): Promise<void> {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.name });
    if (length < this.length) {
      for (const idx of [...this.pages.keys()]) {
        if (idx * PAGE >= length) this.pages.delete(idx);
        else if ((idx + 1) * PAGE > length) this.pages.get(idx)!.fill(0, length - idx * PAGE);
      }
    }
    this.length = length;
  }

  async flush(): Promise<void> {}
  async close(): Promise<void> {}

  /** ranges of pages ever written (for tests) */
  allocatedPages(): number {
    return this.pages.size;
  }
}

interface MemoryFile {
  data: MemoryStore;
  id: number;
  mtimeMs: number;
  links: number;
}

let namespaces = 0;
let fileIds = 0;

/**
 * Named stores in memory: any image (multi-file VMDKs, chains of any format) can be created,
 * opened, renamed and checked here without touching a file. Names are absolute '/'-separated
 * paths; a relative name is taken from "/". Folders exist implicitly (a name "/a/b" makes "/a").
 */
export class MemoryNamespace implements Namespace {
  readonly label: string;
  readonly cacheMode: CacheMode;
  private readonly files = new Map<string, MemoryFile>();
  constructor(opts: { cacheMode?: CacheMode } = {}) {
    this.label = `memory:${++namespaces}`;
    this.cacheMode = opts.cacheMode ?? 'writeback';
  }

  absolute(name: string): string {
    return normalize(isAbsolute(name) ? name : '/' + name);
  }

  resolve(base: string, relativeName: string): string {
    return resolveBeside(this.absolute(base), relativeName);
  }

  private get(name: string): MemoryFile {
    const f = this.files.get(this.absolute(name));
    if (!f) throw new DiskError('FILENOTFOUND', undefined, { path: name });
    return f;
  }

  async open(name: string, opts: { write?: boolean } = {}): Promise<ByteStore> {
    if (this.isFolder(this.absolute(name))) throw new DiskError('INVALIDDISK', 'not a regular file', { path: name });
    return new MemoryHandle(name, this.get(name), !opts.write);
  }

  async create(name: string, opts: { overwrite?: boolean } = {}): Promise<ByteStore> {
    const abs = this.absolute(name);
    if (this.isFolder(abs)) throw new DiskError('INVALIDDISK', 'not a regular file', { path: name });
    const old = this.files.get(abs);
    if (old && !opts.overwrite) throw new DiskError('FILEEXISTS', undefined, { path: name });
    if (old) {
      await old.data.truncate(0);
      old.mtimeMs = Date.now();
      return new MemoryHandle(name, old, false);
    }
    const f: MemoryFile = { data: new MemoryStore(), id: ++fileIds, mtimeMs: Date.now(), links: 1 };
    this.files.set(abs, f);
    return new MemoryHandle(name, f, false);
  }

  async rename(from: string, to: string): Promise<void> {
    const f = this.get(from);
    const [a, b] = [this.absolute(from), this.absolute(to)];
    if (a === b) return;
    const old = this.files.get(b);
    if (old) old.links--;
    this.files.set(b, f);
    this.files.delete(a);
  }

  async link(from: string, to: string): Promise<boolean> {
    const f = this.get(from);
    const b = this.absolute(to);
    if (this.files.has(b)) throw new DiskError('FILEEXISTS', undefined, { path: to });
    f.links++;
    this.files.set(b, f);
    return true;
  }

  async remove(name: string): Promise<void> {
    const abs = this.absolute(name);
    const f = this.files.get(abs);
    if (!f) return;
    f.links--;
    this.files.delete(abs);
  }

  async list(dirName: string): Promise<string[]> {
    // any folder may be written to (folders exist by the names in them), so one without names lists empty
    const dir = this.absolute(dirName);
    if (this.files.has(dir)) throw new DiskError('INVAL', 'not a folder', { path: dirName });
    const out = new Set<string>();
    const prefix = dir === '/' ? '/' : dir + '/';
    for (const n of this.files.keys()) if (n.startsWith(prefix)) out.add(n.slice(prefix.length).split('/')[0]!);
    return [...out].sort();
  }

  async stat(name: string): Promise<NameStat> {
    const f = this.get(name);
    return { size: await f.data.size(), id: `${this.label}:${f.id}`, mtimeMs: f.mtimeMs, allocated: f.data.allocatedPages() * PAGE, links: f.links };
  }

  async exists(name: string): Promise<boolean> {
    return this.files.has(this.absolute(name));
  }

  async kind(name: string): Promise<NameKind> {
    const abs = this.absolute(name);
    if (this.files.has(abs)) return 'file';
    return this.isFolder(abs) ? 'dir' : 'missing';
  }

  async realName(name: string): Promise<string> {
    const abs = this.absolute(name);
    if (!this.files.has(abs) && !this.isFolder(abs)) throw new DiskError('FILENOTFOUND', undefined, { path: name });
    return abs;
  }

  /** every name, sorted (for tests and listings) */
  names(): string[] {
    return [...this.files.keys()].sort();
  }

  private isFolder(abs: string): boolean {
    if (abs === '/') return true;
    for (const n of this.files.keys()) if (dirname(n) === abs || n.startsWith(abs + '/')) return true;
    return false;
  }
}

/** One open of a memory file: its own name, read-only flag and closed state over the shared bytes. */
class MemoryHandle implements ByteStore {
  private closed = false;
  constructor(
    readonly name: string,
    private readonly file: MemoryFile,
    readonly readOnly: boolean,
  ) {}
  private live(): MemoryStore {
    if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.name });
    return this.file.data;
  }
  private writable(): MemoryStore {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.name });
    this.file.mtimeMs = Date.now();
    return this.live();
  }
  async size(): Promise<number> {
    return this.live().size();
  }
  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    await this.readInto(buf, offset);
    return buf;
  }
  async readInto(into: Buffer, offset: number): Promise<void> {
    try {
      await this.live().readInto(into, offset);
    } catch (err) {
      if (err instanceof DiskError && err.code === 'CORRUPT') throw new DiskError('CORRUPT', 'unexpected end of file', { path: this.name, offset, length: into.length });
      throw err;
    }
  }
  async readZeroPadded(offset: number, length: number): Promise<Buffer> {
    return this.live().readZeroPadded(offset, length);
  }
  async write(offset: number, data: Buffer): Promise<void> {
    return this.writable().write(offset, data);
  }
  async writev(offset: number, data: readonly Buffer[]): Promise<void> {
    return this.writable().writev(offset, data);
  }
  async truncate(length: number): Promise<void> {
    return this.writable().truncate(length);
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {
    this.closed = true;
  }
}
