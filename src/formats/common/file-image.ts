/**
 * The Image members an open file's session state already holds (VDI, VHD): the image reads them
 * from there, so a resize or a repair that changes the state is seen at once.
 */
import type { Namespace } from '../../storage/namespace.js';

export interface FileFacts {
  readonly path: string;
  readonly namespace: Namespace;
  readonly capacity: number;
  readonly readOnly: boolean;
}

export abstract class FileImage<F extends FileFacts> {
  protected constructor(protected readonly file: F) {}

  get path(): string {
    return this.file.path;
  }

  get namespace(): Namespace {
    return this.file.namespace;
  }

  get capacity(): number {
    return this.file.capacity;
  }

  get readOnly(): boolean {
    return this.file.readOnly;
  }
}
