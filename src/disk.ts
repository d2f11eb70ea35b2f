/**
 * The Disk API: what VixDiskLib_Open/Read/Write/GetInfo/... are to a VDDK program, in bytes.
 * It is the one place that validates requests (range, read-only, closed) before a driver sees
 * them, serialises writes, and offers sector-unit helpers for callers who think in sectors.
 */
import { DiskError } from './core/errors.js';
import { SECTOR_SIZE, checkRange } from './core/ints.js';
import { detectFormat, driverByName } from './formats/registry.js';
import type { BlockExtent, CreateOptions, DiskInfo, Image, OpenOptions } from './formats/types.js';

export interface DiskOpenOptions extends OpenOptions {
  /** format name; detected from the content when omitted */
  format?: string;
}

export interface DiskCreateOptions extends CreateOptions {
  /** format name (default vmdk) */
  format?: string;
}

export class Disk {
  private closed = false;
  private writeQueue: Promise<unknown> = Promise.resolve();

  private constructor(readonly image: Image) {}

  static async open(path: string, opts: DiskOpenOptions = {}): Promise<Disk> {
    const driver = opts.format ? driverByName(opts.format) : await detectFormat(path);
    return new Disk(await driver.open(path, opts));
  }

  static async create(path: string, opts: DiskCreateOptions): Promise<Disk> {
    const driver = driverByName(opts.format ?? 'vmdk');
    return new Disk(await driver.create(path, opts));
  }

  /** wrap an already opened image */
  static from(image: Image): Disk {
    return new Disk(image);
  }

  get path(): string {
    return this.image.path;
  }
  get format(): string {
    return this.image.format;
  }
  /** the format's own type name (VMDK createType, ...) */
  get type(): string {
    return this.image.type;
  }
  /** virtual size in bytes */
  get capacity(): number {
    return this.image.capacity;
  }
  get sectorCount(): number {
    return Math.floor(this.image.capacity / SECTOR_SIZE);
  }
  get readOnly(): boolean {
    return this.image.readOnly;
  }

  private check(): void {
    if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.path });
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.check();
    checkRange(offset, length, this.capacity, this.path);
    const buf = Buffer.allocUnsafe(length);
    if (length > 0) await this.image.read(buf, offset);
    return buf;
  }

  async readInto(into: Buffer, offset: number): Promise<void> {
    this.check();
    checkRange(offset, into.length, this.capacity, this.path);
    if (into.length > 0) await this.image.read(into, offset);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.check();
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    checkRange(offset, data.length, this.capacity, this.path);
    if (data.length === 0) return;
    // Writes are applied one at a time: allocation in sparse formats is not reentrant.
    const run = this.writeQueue.then(() => this.image.write(data, offset));
    this.writeQueue = run.catch(() => {});
    await run;
  }

  async readSectors(startSector: number, sectorCount: number): Promise<Buffer> {
    return this.read(startSector * SECTOR_SIZE, sectorCount * SECTOR_SIZE);
  }

  async writeSectors(startSector: number, data: Buffer): Promise<void> {
    if (data.length % SECTOR_SIZE !== 0) throw new DiskError('INVAL', 'sector writes take whole sectors', { path: this.path, length: data.length });
    return this.write(startSector * SECTOR_SIZE, data);
  }

  async blockStatus(offset = 0, length = this.capacity - offset): Promise<BlockExtent[]> {
    this.check();
    checkRange(offset, length, this.capacity, this.path);
    if (length === 0) return [];
    return this.image.blockStatus(offset, length);
  }

  async flush(): Promise<void> {
    this.check();
    await this.writeQueue;
    await this.image.flush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.writeQueue;
    this.closed = true;
    await this.image.close();
  }

  async info(): Promise<DiskInfo> {
    this.check();
    return this.image.info();
  }

  metadataKeys(): string[] {
    this.check();
    return this.image.metadataKeys();
  }

  readMetadata(key: string): string | undefined {
    this.check();
    return this.image.readMetadata(key);
  }

  async writeMetadata(key: string, value: string): Promise<void> {
    this.check();
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    const run = this.writeQueue.then(() => this.image.writeMetadata(key, value));
    this.writeQueue = run.catch(() => {});
    await run;
  }
}

export async function openDisk(path: string, opts: DiskOpenOptions = {}): Promise<Disk> {
  return Disk.open(path, opts);
}

export async function createDisk(path: string, opts: DiskCreateOptions): Promise<Disk> {
  return Disk.create(path, opts);
}
