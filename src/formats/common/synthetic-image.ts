/**
 * The read-only half of the Image contract for images that exist only in memory (a disk being
 * assembled by mkimg, a format read once from a pipe): no file, no parent, no identity, no
 * metadata, nothing to maintain, and every change refused with RDONLY. Subclasses add reading,
 * block status and info. Nothing is ever looked up beside such an image, so its namespace is an
 * empty in-memory one.
 */
import { DiskError } from '../../core/errors.js';
import { MemoryNamespace } from '../../storage/memory.js';
import type { Namespace } from '../../storage/namespace.js';
import type { Capabilities, ImageMaintenance } from '../types.js';
import { READ_ONLY_CAPABILITIES } from './driver.js';

export abstract class SyntheticImage {
  readonly readOnly = true;
  readonly capabilities: Capabilities = READ_ONLY_CAPABILITIES;
  abstract readonly path: string;
  private names: Namespace | undefined;

  get namespace(): Namespace {
    return (this.names ??= new MemoryNamespace());
  }
  async write(): Promise<void> {
    throw new DiskError('RDONLY', undefined, { path: this.path });
  }
  backing(): undefined {
    return undefined;
  }
  identity(): undefined {
    return undefined;
  }
  async setIdentity(): Promise<void> {
    throw new DiskError('RDONLY', undefined, { path: this.path });
  }
  async setBacking(): Promise<void> {
    throw new DiskError('RDONLY', undefined, { path: this.path });
  }
  async makeEmpty(): Promise<void> {
    throw new DiskError('RDONLY', undefined, { path: this.path });
  }
  maintenance(): ImageMaintenance {
    return {};
  }
  async flush(): Promise<void> {}
  metadataKeys(): string[] {
    return [];
  }
  readMetadata(): undefined {
    return undefined;
  }
  async writeMetadata(): Promise<void> {
    throw new DiskError('RDONLY', undefined, { path: this.path });
  }
}
