/**
 * A namespace view for files nobody can see yet (convert's target under its hidden temporary
 * name): until `seal()`, a store's flush only notes that it has unflushed writes. Drivers flush
 * between a block and the table entry naming it so that a crash leaves an image that opens; a
 * file that is removed after a crash, never opened, needs none of those barriers (268 fdatasyncs
 * for a 256 MiB VMDK convert, where the old order needed 11). `syncNow()` pushes what was written
 * to the disk (convert calls it every 32 MiB, so write-back overlaps the copy); `seal()` makes
 * every written store durable once more; from then on flush is a flush again, so the steps that make the file visible
 * (descriptor rewrites, renames) keep their order. A store closed before the seal is flushed as
 * it closes.
 */
import type { Namespace } from './namespace.js';
import type { ByteStore } from './store.js';
import { NamespaceWrapper, StoreWrapper } from './wrappers.js';

class DeferredStore extends StoreWrapper {
  pending = false;
  closed = false;
  constructor(
    inner: ByteStore,
    private readonly owner: DeferredSyncNamespace,
  ) {
    super(inner);
  }
  override write(offset: number, data: Buffer): Promise<void> {
    this.pending = true;
    return this.inner.write(offset, data);
  }
  override writev(offset: number, data: readonly Buffer[]): Promise<void> {
    this.pending = true;
    return this.inner.writev(offset, data);
  }
  override truncate(length: number): Promise<void> {
    this.pending = true;
    return this.inner.truncate(length);
  }
  override async flush(): Promise<void> {
    if (this.owner.sealed) await this.sync();
  }
  async sync(): Promise<void> {
    if (!this.pending || this.closed) return;
    this.pending = false;
    await this.inner.flush();
  }
  override async close(): Promise<void> {
    if (this.closed) return;
    await this.sync();
    this.closed = true;
    this.owner.forget(this);
    await this.inner.close();
  }
}

export class DeferredSyncNamespace extends NamespaceWrapper {
  sealed = false;
  private readonly stores = new Set<DeferredStore>();
  constructor(inner: Namespace) {
    super(inner);
  }

  /** make every written store durable; later flushes are flushes again */
  async seal(): Promise<void> {
    this.sealed = true;
    await this.syncNow();
  }
  /**
   * make what was written so far durable, flushes staying deferred: a long copy calls it every
   * few dozen MiB so the data reaches the disk while the copy goes on, not all at the seal
   */
  async syncNow(): Promise<void> {
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
  override async open(name: string, opts?: { write?: boolean }): Promise<ByteStore> {
    return this.wrap(await this.inner.open(name, opts));
  }
  override async create(name: string, opts?: { overwrite?: boolean }): Promise<ByteStore> {
    return this.wrap(await this.inner.create(name, opts));
  }
}
