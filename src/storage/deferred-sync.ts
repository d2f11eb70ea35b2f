/**
 * A namespace view for files nobody can see yet (convert's target under its hidden temporary
 * name): until `seal()`, a store's flush only notes that it has unflushed writes. Drivers flush
 * between a block and the table entry naming it so that a crash leaves an image that opens; a
 * file that is removed after a crash, never opened, needs none of those barriers (268 fdatasyncs
 * for a 256 MiB VMDK convert, where the old order needed 11). `seal()` makes every written store
 * durable once; from then on flush is a flush again, so the steps that make the file visible
 * (descriptor rewrites, renames) keep their order. A store closed before the seal is flushed as
 * it closes.
 */
import type { ByteStore, FileExtent } from './store.js';
import type { CacheMode, NameKind, NameStat, Namespace } from './namespace.js';

class DeferredStore implements ByteStore {
  pending = false;
  closed = false;
  constructor(
    private readonly inner: ByteStore,
    private readonly owner: DeferredSyncNamespace,
  ) {}
  get name(): string {
    return this.inner.name;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  size(): Promise<number> {
    return this.inner.size();
  }
  read(offset: number, length: number): Promise<Buffer> {
    return this.inner.read(offset, length);
  }
  readInto(into: Buffer, offset: number): Promise<void> {
    return this.inner.readInto(into, offset);
  }
  readZeroPadded(offset: number, length: number): Promise<Buffer> {
    return this.inner.readZeroPadded(offset, length);
  }
  write(offset: number, data: Buffer): Promise<void> {
    this.pending = true;
    return this.inner.write(offset, data);
  }
  writev(offset: number, data: readonly Buffer[]): Promise<void> {
    this.pending = true;
    return this.inner.writev(offset, data);
  }
  truncate(length: number): Promise<void> {
    this.pending = true;
    return this.inner.truncate(length);
  }
  async flush(): Promise<void> {
    if (this.owner.sealed) await this.sync();
  }
  async sync(): Promise<void> {
    if (!this.pending || this.closed) return;
    this.pending = false;
    await this.inner.flush();
  }
  async close(): Promise<void> {
    if (this.closed) return;
    await this.sync();
    this.closed = true;
    this.owner.forget(this);
    await this.inner.close();
  }
  extents(offset: number, length: number): Promise<FileExtent[] | undefined> {
    return this.inner.extents ? this.inner.extents(offset, length) : Promise.resolve(undefined);
  }
}

export class DeferredSyncNamespace implements Namespace {
  sealed = false;
  private readonly stores = new Set<DeferredStore>();
  constructor(readonly inner: Namespace) {}

  /** make every written store durable; later flushes are flushes again */
  async seal(): Promise<void> {
    this.sealed = true;
    for (const s of [...this.stores]) await s.sync();
  }
  /** @internal a store that closed */
  forget(s: DeferredStore): void {
    this.stores.delete(s);
  }
  private wrap(st: ByteStore): ByteStore {
    if (st.readOnly) return st;
    const d = new DeferredStore(st, this);
    this.stores.add(d);
    return d;
  }

  get label(): string {
    return this.inner.label;
  }
  get cacheMode(): CacheMode {
    return this.inner.cacheMode;
  }
  async open(name: string, opts?: { write?: boolean }): Promise<ByteStore> {
    return this.wrap(await this.inner.open(name, opts));
  }
  async create(name: string, opts?: { overwrite?: boolean }): Promise<ByteStore> {
    return this.wrap(await this.inner.create(name, opts));
  }
  rename(from: string, to: string): Promise<void> {
    return this.inner.rename(from, to);
  }
  link(from: string, to: string): Promise<boolean> {
    return this.inner.link(from, to);
  }
  remove(name: string): Promise<void> {
    return this.inner.remove(name);
  }
  list(dirName: string): Promise<string[]> {
    return this.inner.list(dirName);
  }
  stat(name: string): Promise<NameStat> {
    return this.inner.stat(name);
  }
  exists(name: string): Promise<boolean> {
    return this.inner.exists(name);
  }
  kind(name: string): Promise<NameKind> {
    return this.inner.kind(name);
  }
  realName(name: string): Promise<string> {
    return this.inner.realName(name);
  }
  absolute(name: string): string {
    return this.inner.absolute(name);
  }
  resolve(base: string, relativeName: string): string {
    return this.inner.resolve(base, relativeName);
  }
}
