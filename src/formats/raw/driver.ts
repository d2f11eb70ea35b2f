/**
 * raw: the image file is the disk. Block status comes from the store's holes where it can say
 * (a host file: SEEK_DATA/SEEK_HOLE through storage/holes.ts): holes read as zeros, the rest is
 * data, one system call per extent, so a sparse 4 TiB file is not read to be mapped, converted or
 * checksummed. Elsewhere (a memory or remote store, a file system without SEEK_DATA) it is found
 * by reading (capability `blockStatus: 'emulate'`): 64 KiB blocks that read as all zeros are
 * reported as zero, and copy loops skip that pass and detect zeros as they copy, so such a
 * source is read once, not twice.
 */
import { appendExtent } from '../common/extents.js';
import { writeZeros } from '../common/create.js';
import { oneFileInfo } from '../common/info.js';
import { DiskError } from '../../core/errors.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { BlockExtent, Capabilities, CreateOptions, DiskInfo, Image, ImageMaintenance, MappedExtent, OpenOptions } from '../types.js';
import { NO_PROPERTIES } from '../common/properties.js';
import { READ_ONLY_CAPABILITIES, defineDriver } from '../common/driver.js';

const ZERO_BLOCK = 64 * 1024;
const ZEROS = Buffer.alloc(ZERO_BLOCK);

const RAW_CAPABILITIES: Capabilities = Object.freeze({
  ...READ_ONLY_CAPABILITIES,
  write: 'native',
  blockStatus: 'emulate',
  zero: 'emulate',
  createTypes: ['raw'],
  resize: 'grow-shrink',
});

export class RawImage implements Image {
  readonly format = 'raw';
  readonly type = 'raw';
  readonly clusterSize = 512;
  readonly capabilities: Capabilities;
  constructor(
    readonly namespace: Namespace,
    readonly path: string,
    private readonly store: ByteStore,
    readonly capacity: number,
    readonly readOnly: boolean,
    /** the store reports its holes (ByteStore.extents) */
    private readonly holes = false,
  ) {
    this.capabilities = { ...RAW_CAPABILITIES, ...(readOnly ? { write: 'none' as const } : {}), ...(holes ? { blockStatus: 'native' as const } : {}) };
  }
  static async open(ns: Namespace, path: string, opts: OpenOptions = {}): Promise<RawImage> {
    const store = await ns.open(path, { write: !opts.readOnly });
    try {
      const size = await store.size();
      const holes = (await store.extents?.(0, Math.min(size, 1))) !== undefined;
      return new RawImage(ns, path, store, size, !!opts.readOnly, holes);
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
  }
  static async create(ns: Namespace, path: string, opts: CreateOptions): Promise<RawImage> {
    if (!Number.isSafeInteger(opts.capacity) || opts.capacity < 0) throw new DiskError('INVAL', 'capacity must be a whole number of bytes', { path, field: 'capacity' });
    const store = await ns.create(path, { overwrite: !!opts.overwrite });
    await store.truncate(opts.capacity);
    if (opts.preallocate) {
      try {
        await writeZeros(store, 0, opts.capacity);
      } catch (err) {
        await store.close().catch(() => {});
        await ns.remove(path).catch(() => {});
        throw err;
      }
    }
    const holes = (await store.extents?.(0, Math.min(opts.capacity, 1))) !== undefined;
    return new RawImage(ns, path, store, opts.capacity, false, holes);
  }
  read(into: Buffer, offset: number): Promise<void> {
    return this.store.readInto(into, offset);
  }
  write(data: Buffer, offset: number): Promise<void> {
    return this.store.write(offset, data);
  }
  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const known = this.holes ? await this.store.extents!(offset, length) : undefined;
    if (known) return known.map((e) => ({ offset: e.offset, length: e.length, state: e.data ? 'data' : 'zero' }));
    return this.blockStatusByReading(offset, length);
  }
  /** every byte of a raw image lies at its own offset of the file, holes included (as qemu-img map says) */
  async mapStatus(offset: number, length: number): Promise<MappedExtent[]> {
    return (await this.blockStatus(offset, length)).map((r) => ({ ...r, file: this.path, fileOffset: r.offset }));
  }
  private async blockStatusByReading(offset: number, length: number): Promise<BlockExtent[]> {
    const out: BlockExtent[] = [];
    const step = 4 * 1024 * 1024;
    const buf = Buffer.allocUnsafe(Math.min(step, length));
    for (let at = offset; at < offset + length; at += step) {
      const n = Math.min(step, offset + length - at);
      const chunk = buf.subarray(0, n);
      await this.store.readInto(chunk, at);
      for (let b = 0; b < n; ) {
        // blocks aligned to 64 KiB in disk offsets
        const e = Math.min(n, b + ZERO_BLOCK - ((at + b) % ZERO_BLOCK));
        const state = chunk.compare(ZEROS, 0, e - b, b, e) === 0 ? 'zero' : 'data';
        appendExtent(out, at + b, e - b, state);
        b = e;
      }
    }
    return out;
  }
  maintenance(): ImageMaintenance {
    return {
      /** a raw file is its disk: truncate it (growing leaves a hole that reads as zeros) */
      resize: async (newCapacity: number): Promise<void> => {
        try {
          await this.store.truncate(newCapacity);
          await this.store.flush();
        } finally {
          await this.store.close();
        }
      },
    };
  }
  flush(): Promise<void> {
    return this.store.flush();
  }
  close(): Promise<void> {
    return this.store.close();
  }
  async info(): Promise<DiskInfo> {
    // where the store reports holes, what it stores; else every byte counts
    const known = this.holes ? await this.store.extents!(0, this.capacity) : undefined;
    const allocatedBytes = known ? known.reduce((n, e) => n + (e.data ? e.length : 0), 0) : this.capacity;
    return oneFileInfo(this, { extentType: 'raw', allocatedBytes, fileSize: this.capacity });
  }
  backing(): undefined {
    return undefined;
  }
  identity(): undefined {
    return undefined;
  }
  async setIdentity(): Promise<void> {
    throw new DiskError('NOTSUPPORTED', 'raw images have no identity', { path: this.path });
  }
  async setBacking(): Promise<void> {
    throw new DiskError('NOTSUPPORTED', 'raw images cannot have a parent', { path: this.path });
  }
  async makeEmpty(): Promise<void> {
    throw new DiskError('NOTSUPPORTED', 'raw images cannot be emptied', { path: this.path });
  }
  metadataKeys(): string[] {
    return [];
  }
  readMetadata(): string | undefined {
    return undefined;
  }
  async writeMetadata(): Promise<void> {
    throw new DiskError('NOTSUPPORTED', 'raw images have no metadata', { path: this.path });
  }
}

export const rawDriver = defineDriver({
  name: 'raw',
  description: 'plain image file: the file is the disk',
  newIdentity: () => undefined,
  createOptions: [{ name: 'preallocate', description: 'write the zeros instead of leaving the file sparse (qemu-img preallocation=full)' }],
  extensions: ['raw', 'img', 'bin'],
  capabilities: RAW_CAPABILITIES,
  properties: NO_PROPERTIES,
  alignment: 1,
  probe: () => 1,
  open: (ns: Namespace, path: string, opts: OpenOptions) => RawImage.open(ns, path, opts),
  create: (ns: Namespace, path: string, opts: CreateOptions) => RawImage.create(ns, path, opts),
});
