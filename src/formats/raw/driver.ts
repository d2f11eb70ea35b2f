/**
 * raw: the image file is the disk. Block status reports everything as data: Node exposes no
 * SEEK_DATA/SEEK_HOLE, so holes are found by the copy loop's zero detection instead.
 */
import { DiskError } from '../../core/errors.js';
import { FileStore, fsx } from '../../storage/file.js';
import type { ByteStore } from '../../storage/store.js';
import type { BlockExtent, Capabilities, CreateOptions, DiskInfo, Driver, Image, OpenOptions } from '../types.js';

const RAW_CAPABILITIES: Capabilities = Object.freeze({ write: 'native', blockStatus: 'emulate', zero: 'emulate', metadata: false, createTypes: ['raw'] });

export class RawImage implements Image {
  readonly format = 'raw';
  readonly type = 'raw';
  readonly clusterSize = 512;
  readonly capabilities: Capabilities;
  constructor(
    readonly path: string,
    private readonly store: ByteStore,
    readonly capacity: number,
    readonly readOnly: boolean,
  ) {
    this.capabilities = readOnly ? { ...RAW_CAPABILITIES, write: 'none' } : RAW_CAPABILITIES;
  }
  static async open(path: string, opts: OpenOptions = {}): Promise<RawImage> {
    const store = await FileStore.open(path, { readOnly: !!opts.readOnly });
    return new RawImage(path, store, await store.size(), !!opts.readOnly);
  }
  static async create(path: string, opts: CreateOptions): Promise<RawImage> {
    if (!Number.isSafeInteger(opts.capacity) || opts.capacity < 0) throw new DiskError('INVAL', 'capacity must be a whole number of bytes', { path, field: 'capacity' });
    const store = await FileStore.open(path, { create: true, overwrite: !!opts.overwrite });
    await store.truncate(opts.capacity);
    return new RawImage(path, store, opts.capacity, false);
  }
  read(into: Buffer, offset: number): Promise<void> {
    return this.store.readInto(into, offset);
  }
  write(data: Buffer, offset: number): Promise<void> {
    return this.store.write(offset, data);
  }
  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return [{ offset, length, state: 'data' }];
  }
  flush(): Promise<void> {
    return this.store.flush();
  }
  close(): Promise<void> {
    return this.store.close();
  }
  async info(): Promise<DiskInfo> {
    return {
      format: 'raw',
      type: 'raw',
      capacity: this.capacity,
      sectors: Math.floor(this.capacity / 512),
      numLinks: 1,
      extents: [{ path: this.path, type: 'raw', access: this.readOnly ? 'RDONLY' : 'RW', length: this.capacity, virtualOffset: 0, fileOffset: 0 }],
      allocatedBytes: this.capacity,
      fileSize: this.capacity,
      diskSize: await fsx.allocatedSize(this.path),
      readOnly: this.readOnly,
      files: [this.path],
    };
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

export const rawDriver: Driver = Object.freeze({
  name: 'raw',
  extensions: ['raw', 'img', 'bin'],
  capabilities: RAW_CAPABILITIES,
  probe: () => 1,
  open: (path: string, opts: OpenOptions) => RawImage.open(path, opts),
  create: (path: string, opts: CreateOptions) => RawImage.create(path, opts),
});
