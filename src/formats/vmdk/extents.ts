/** The kinds of extent a VMDK link is made of, behind one small interface (ESXi deltas: esx-sparse.ts). */
import { DiskError } from '../../core/errors.js';
import type { ByteStore } from '../../storage/store.js';
import type { BlockExtent, MappedExtent } from '../types.js';
import type { ExtentLine } from './descriptor.js';
import type { SparseExtent } from './sparse.js';

export interface Extent {
  readonly line: ExtentLine;
  /** bytes of the virtual disk this extent covers */
  readonly length: number;
  /** resolved path of its file, if any */
  readonly path?: string;
  readonly store?: ByteStore;
  readonly sparse?: SparseExtent;
  /** allocation unit of a sparse extent, in bytes (absent for flat and zero extents) */
  readonly grainBytes?: number;
  read(into: Buffer, offset: number): Promise<void>;
  write(data: Buffer, offset: number): Promise<void>;
  status(offset: number, length: number): Promise<BlockExtent[]>;
  /** status with the file offsets of stored ranges (Image.mapStatus); absent: not known (ESXi deltas) */
  mapStatus?(offset: number, length: number): Promise<MappedExtent[]>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** FLAT and VMFS extents: a byte range of a plain file, starting at `fileOffset`. */
export class FlatExtent implements Extent {
  private fileSize: number;
  constructor(
    readonly line: ExtentLine,
    readonly store: ByteStore,
    readonly path: string,
    private readonly fileOffset: number,
    fileSize: number,
    private readonly readOnly: boolean,
    /** false when an earlier line of the same file owns (and closes) the store */
    private readonly ownsStore = true,
  ) {
    this.fileSize = fileSize;
  }
  get length(): number {
    return this.line.sectorCount * 512;
  }
  async read(into: Buffer, offset: number): Promise<void> {
    const at = this.fileOffset + offset;
    if (at + into.length <= this.fileSize) return this.store.readInto(into, at);
    // A flat file shorter than its extent line (a copy cut short) reads as zeros past its end.
    (await this.store.readZeroPadded(at, into.length)).copy(into);
  }
  async write(data: Buffer, offset: number): Promise<void> {
    if (this.readOnly) throw new DiskError('RDONLY', `extent is ${this.line.access}`, { path: this.path });
    const at = this.fileOffset + offset;
    await this.store.write(at, data);
    this.fileSize = Math.max(this.fileSize, at + data.length);
  }
  async status(offset: number, length: number): Promise<BlockExtent[]> {
    return [{ offset, length, state: 'data' }];
  }
  async mapStatus(offset: number, length: number): Promise<MappedExtent[]> {
    return [{ offset, length, state: 'data', file: this.path, fileOffset: this.fileOffset + offset }];
  }
  async flush(): Promise<void> {
    await this.store.flush();
  }
  async close(): Promise<void> {
    if (this.ownsStore) await this.store.close();
  }
}

/** ZERO extents: no file; reads return zeros, writes are refused. */
export class ZeroExtent implements Extent {
  constructor(
    readonly line: ExtentLine,
    /** the descriptor's path, for errors */
    private readonly descriptorPath: string,
  ) {}
  get length(): number {
    return this.line.sectorCount * 512;
  }
  async read(into: Buffer): Promise<void> {
    into.fill(0);
  }
  async write(_data: Buffer, offset: number): Promise<void> {
    throw new DiskError('PERMISSIONS', 'cannot write to a ZERO extent', { path: this.descriptorPath, offset });
  }
  async status(offset: number, length: number): Promise<BlockExtent[]> {
    return [{ offset, length, state: 'zero' }];
  }
  mapStatus(offset: number, length: number): Promise<MappedExtent[]> {
    return this.status(offset, length);
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

/** SPARSE (and VMFSSPARSE holding a KDMV file) extents. */
export class SparseFileExtent implements Extent {
  constructor(
    readonly line: ExtentLine,
    readonly sparse: SparseExtent,
    readonly path: string,
    private readonly writable: boolean,
  ) {}
  get store(): ByteStore {
    return this.sparse.store;
  }
  get grainBytes(): number {
    return this.sparse.grainBytes;
  }
  get length(): number {
    return this.line.sectorCount * 512;
  }
  read(into: Buffer, offset: number): Promise<void> {
    return this.sparse.read(into, offset);
  }
  async write(data: Buffer, offset: number): Promise<void> {
    if (!this.writable) throw new DiskError('RDONLY', `extent is ${this.line.access}`, { path: this.path });
    await this.sparse.write(data, offset);
  }
  status(offset: number, length: number): Promise<BlockExtent[]> {
    return this.sparse.status(offset, length);
  }
  mapStatus(offset: number, length: number): Promise<MappedExtent[]> {
    return this.sparse.status(offset, length, true);
  }
  flush(): Promise<void> {
    return this.sparse.flush();
  }
  close(): Promise<void> {
    return this.sparse.store.close();
  }
}
