/**
 * raw: the image file is the disk. Node exposes no SEEK_DATA/SEEK_HOLE, so block status is
 * found by reading (capability `blockStatus: 'emulate'`): 64 KiB blocks that read as all zeros
 * are reported as zero. Copy loops skip that pass for emulated drivers and detect zeros as they
 * copy, so a raw source is read once, not twice.
 */
import { DiskError } from '../../core/errors.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { BlockExtent, Capabilities, CreateOptions, DiskInfo, Image, OpenOptions } from '../types.js';
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
  ) {
    this.capabilities = readOnly ? { ...RAW_CAPABILITIES, write: 'none' } : RAW_CAPABILITIES;
  }
  static async open(ns: Namespace, path: string, opts: OpenOptions = {}): Promise<RawImage> {
    const store = await ns.open(path, { write: !opts.readOnly });
    return new RawImage(ns, path, store, await store.size(), !!opts.readOnly);
  }
  static async create(ns: Namespace, path: string, opts: CreateOptions): Promise<RawImage> {
    if (!Number.isSafeInteger(opts.capacity) || opts.capacity < 0) throw new DiskError('INVAL', 'capacity must be a whole number of bytes', { path, field: 'capacity' });
    const store = await ns.create(path, { overwrite: !!opts.overwrite });
    await store.truncate(opts.capacity);
    return new RawImage(ns, path, store, opts.capacity, false);
  }
  read(into: Buffer, offset: number): Promise<void> {
    return this.store.readInto(into, offset);
  }
  write(data: Buffer, offset: number): Promise<void> {
    return this.store.write(offset, data);
  }
  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
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
        const last = out[out.length - 1];
        if (last && last.state === state) last.length += e - b;
        else out.push({ offset: at + b, length: e - b, state });
        b = e;
      }
    }
    return out;
  }
  /** a raw file is its disk: truncate it (growing leaves a hole that reads as zeros) */
  async resize(newCapacity: number): Promise<void> {
    try {
      await this.store.truncate(newCapacity);
      await this.store.flush();
    } finally {
      await this.store.close();
    }
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
      diskSize: (await this.namespace.stat(this.path)).allocated ?? this.capacity,
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

export const rawDriver = defineDriver({
  name: 'raw',
  description: 'plain image file: the file is the disk',
  newIdentity: () => undefined,
  createOptions: [],
  extensions: ['raw', 'img', 'bin'],
  capabilities: RAW_CAPABILITIES,
  properties: NO_PROPERTIES,
  alignment: 1,
  probe: () => 1,
  open: (ns: Namespace, path: string, opts: OpenOptions) => RawImage.open(ns, path, opts),
  create: (ns: Namespace, path: string, opts: CreateOptions) => RawImage.create(ns, path, opts),
});
