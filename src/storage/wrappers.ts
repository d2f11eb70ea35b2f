/**
 * Pass-through bases for namespaces and stores that add one behaviour on top of another
 * (recording for the crash explorer, deferred syncs for convert's hidden targets): each
 * overrides what it changes and inherits the rest.
 */
import type { CacheMode, NameKind, NameStat, Namespace } from './namespace.js';
import type { ByteStore, FileExtent } from './store.js';

export class StoreWrapper implements ByteStore {
  constructor(protected readonly inner: ByteStore) {}
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
    return this.inner.write(offset, data);
  }
  writev(offset: number, data: readonly Buffer[]): Promise<void> {
    return this.inner.writev(offset, data);
  }
  truncate(length: number): Promise<void> {
    return this.inner.truncate(length);
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  extents(offset: number, length: number): Promise<FileExtent[] | undefined> {
    return this.inner.extents ? this.inner.extents(offset, length) : Promise.resolve(undefined);
  }
}

export class NamespaceWrapper implements Namespace {
  constructor(readonly inner: Namespace) {}
  get label(): string {
    return this.inner.label;
  }
  get cacheMode(): CacheMode {
    return this.inner.cacheMode;
  }
  open(name: string, opts?: { write?: boolean }): Promise<ByteStore> {
    return this.inner.open(name, opts);
  }
  create(name: string, opts?: { overwrite?: boolean }): Promise<ByteStore> {
    return this.inner.create(name, opts);
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
