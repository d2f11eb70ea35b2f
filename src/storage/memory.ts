import { DiskError } from '../core/errors.js';
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
    let done = 0;
    while (done < into.length) {
      const pos = offset + done;
      const idx = Math.floor(pos / PAGE);
      const within = pos - idx * PAGE;
      const n = Math.min(PAGE - within, into.length - done);
      const page = this.pages.get(idx);
      if (page) page.copy(into, done, within, within + n);
      done += n;
    }
  }

  async write(offset: number, data: Buffer): Promise<void> {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.name });
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const idx = Math.floor(pos / PAGE);
      const within = pos - idx * PAGE;
      const n = Math.min(PAGE - within, data.length - done);
      let page = this.pages.get(idx);
      if (!page) {
        page = Buffer.alloc(PAGE);
        this.pages.set(idx, page);
      }
      data.copy(page, within, done, done + n);
      done += n;
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
