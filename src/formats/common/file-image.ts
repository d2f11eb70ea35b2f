/**
 * What a VDI and a VHD image do alike over their session state (`file`) and allocation map: the
 * Image members the state already holds (read from there, so a resize or a repair that changes
 * the state is seen at once), and maintenance handed to the format's functions of (file, map),
 * a resize closing the image afterwards as the Image contract says.
 */
import type { Namespace } from '../../storage/namespace.js';
import type { CheckOptions, CheckReport, ImageMaintenance, InPlaceOptions, InPlaceResult } from '../types.js';

export interface FileFacts {
  readonly path: string;
  readonly namespace: Namespace;
  readonly capacity: number;
  readonly readOnly: boolean;
}

/** the format's maintenance functions over its state and allocation map */
export interface MapMaintenance<F, M> {
  check(opts: CheckOptions): Promise<CheckReport>;
  compact(file: F, map: M, opts: InPlaceOptions): Promise<InPlaceResult>;
  defragment(file: F, map: M, opts: InPlaceOptions): Promise<InPlaceResult>;
  resize(file: F, map: M, newCapacity: number): Promise<void>;
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

  abstract close(): Promise<void>;

  protected maintenanceWith<M>(map: M, m: MapMaintenance<F, M>): ImageMaintenance {
    return {
      check: (opts: CheckOptions) => m.check(opts),
      compact: (opts: InPlaceOptions = {}) => m.compact(this.file, map, opts),
      defragment: (opts: InPlaceOptions = {}) => m.defragment(this.file, map, opts),
      resize: async (newCapacity: number) => {
        try {
          await m.resize(this.file, map, newCapacity);
        } finally {
          await this.close();
        }
      },
    };
  }
}
