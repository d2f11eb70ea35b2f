/**
 * Files the user picked in a browser (File / Blob objects) as a read-only namespace. Each file
 * gets a name ("/disk.vmdk", or "/folder/disk.vmdk" for a picked folder's relative path), so a
 * VMDK descriptor finds its extents and a child finds its parent by the names it records, as
 * they would in one folder on disk. Bytes are read with `blob.slice(a, b).arrayBuffer()`: the
 * browser reads only that range of the file, so a 100 GiB image costs what is read.
 *
 * Nothing here uses the DOM's types: a blob is anything with `size` and `slice().arrayBuffer()`,
 * so Node's own Blob tests it (test/unit/blob-namespace.test.ts).
 */
import { DiskError } from '../core/errors.js';
import { dirname, isAbsolute, normalize, resolveBeside } from '../core/names.js';
import type { CacheMode, NameKind, NameStat, Namespace } from './namespace.js';
import type { ByteStore } from './store.js';

/** the part of the File API's Blob (and File) a BlobNamespace reads */
export interface BlobLike {
  readonly size: number;
  slice(start?: number, end?: number): { arrayBuffer(): Promise<ArrayBuffer> };
  /** File: milliseconds since the epoch */
  readonly lastModified?: number;
}

export interface NamedBlob {
  /** "disk.vmdk" or "folder/disk.vmdk" (a picked folder's webkitRelativePath) */
  name: string;
  blob: BlobLike;
}

let namespaces = 0;

function readOnlyError(name: string, what: string): DiskError {
  return new DiskError('RDONLY', `picked files are read-only: ${name} cannot be ${what}`, { path: name });
}

export class BlobNamespace implements Namespace {
  readonly label: string;
  readonly cacheMode: CacheMode = 'writeback';
  private readonly files = new Map<string, { blob: BlobLike; id: number }>();

  constructor(files: readonly NamedBlob[]) {
    this.label = `blob:${++namespaces}`;
    files.forEach((f, i) => {
      const abs = this.absolute(f.name);
      if (this.files.has(abs)) throw new DiskError('FILEEXISTS', 'two picked files have the same name', { path: abs });
      this.files.set(abs, { blob: f.blob, id: i });
    });
  }

  /** every name, sorted */
  names(): string[] {
    return [...this.files.keys()].sort();
  }

  absolute(name: string): string {
    return normalize(isAbsolute(name) ? name : '/' + name);
  }

  /** a Windows hint (a VHD's "W2ru" locator, ".\\parent.vhd") is taken with '/' separators */
  resolve(base: string, relativeName: string): string {
    return resolveBeside(this.absolute(base), relativeName.replace(/\\/g, '/'));
  }

  private get(name: string): { blob: BlobLike; id: number } {
    const f = this.files.get(this.absolute(name));
    if (!f) throw new DiskError('FILENOTFOUND', 'not among the picked files', { path: name });
    return f;
  }

  async open(name: string, opts: { write?: boolean } = {}): Promise<ByteStore> {
    const f = this.get(name);
    if (opts.write) throw readOnlyError(name, 'opened for writing');
    return new BlobStore(this.absolute(name), f.blob);
  }

  async create(name: string): Promise<ByteStore> {
    throw readOnlyError(name, 'created');
  }

  async rename(from: string): Promise<void> {
    throw readOnlyError(from, 'renamed');
  }

  async link(): Promise<boolean> {
    return false;
  }

  async remove(name: string): Promise<void> {
    throw readOnlyError(name, 'removed');
  }

  async list(dirName: string): Promise<string[]> {
    const dir = this.absolute(dirName);
    if (this.files.has(dir)) throw new DiskError('INVAL', 'not a folder', { path: dirName });
    const prefix = dir === '/' ? '/' : dir + '/';
    const out = new Set<string>();
    for (const n of this.files.keys()) if (n.startsWith(prefix)) out.add(n.slice(prefix.length).split('/')[0]!);
    return [...out].sort();
  }

  async stat(name: string): Promise<NameStat> {
    const f = this.get(name);
    return { size: f.blob.size, id: `${this.label}:${f.id}`, mtimeMs: f.blob.lastModified ?? 0, links: 1 };
  }

  async exists(name: string): Promise<boolean> {
    return (await this.kind(name)) !== 'missing';
  }

  async kind(name: string): Promise<NameKind> {
    const abs = this.absolute(name);
    if (this.files.has(abs)) return 'file';
    if (abs === '/') return 'dir';
    for (const n of this.files.keys()) if (dirname(n) === abs || n.startsWith(abs + '/')) return 'dir';
    return 'missing';
  }

  async realName(name: string): Promise<string> {
    if ((await this.kind(name)) === 'missing') throw new DiskError('FILENOTFOUND', 'not among the picked files', { path: name });
    return this.absolute(name);
  }
}

/** One picked file, read by ranges. */
export class BlobStore implements ByteStore {
  readonly readOnly = true;
  constructor(
    readonly name: string,
    private readonly blob: BlobLike,
  ) {}

  async size(): Promise<number> {
    return this.blob.size;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    await this.readInto(buf, offset);
    return buf;
  }

  async readInto(into: Buffer, offset: number): Promise<void> {
    if (offset < 0 || offset + into.length > this.blob.size) {
      throw new DiskError('CORRUPT', 'unexpected end of file', { path: this.name, offset, length: into.length, expected: `at most ${this.blob.size} bytes`, field: 'size' });
    }
    if (into.length === 0) return;
    into.set(new Uint8Array(await this.blob.slice(offset, offset + into.length).arrayBuffer()));
  }

  async readZeroPadded(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    const avail = Math.max(0, Math.min(length, this.blob.size - offset));
    if (avail > 0) await this.readInto(buf.subarray(0, avail), offset);
    return buf;
  }

  async write(): Promise<void> {
    throw readOnlyError(this.name, 'written');
  }
  async writev(): Promise<void> {
    throw readOnlyError(this.name, 'written');
  }
  async truncate(): Promise<void> {
    throw readOnlyError(this.name, 'truncated');
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}
