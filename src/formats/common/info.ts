/**
 * DiskInfo of an image that is one file (every format but VMDK): what follows from being one
 * file (one extent over the whole disk, one name, one link) is filled in here the same way for
 * all, around the members only the format knows. Members keep the order `vdkit info --json`
 * prints them in.
 */
import type { DiskInfo, Geometry, ImageData } from '../types.js';
import { dataBytes } from './extents.js';

export interface OneFileFacts {
  /** the recorded geometry, where the format has one (a present but undefined value prints as null) */
  geometry?: Geometry | undefined;
  /** what the format says of its parent, identity and version */
  links?: Pick<DiskInfo, 'parent' | 'cid' | 'parentCid' | 'uuid' | 'version'>;
  /** the extent's type; default: the image's type in capitals */
  extentType?: string;
  /** where the disk's data starts in the file; default 0 */
  fileOffset?: number;
  /** default: the data ranges of a block status over the whole disk */
  allocatedBytes?: number;
  /** the file's length in bytes (also the disk size where the namespace cannot tell that) */
  fileSize: number;
  warnings?: readonly string[];
  /** passed on as DiskInfo has them */
  qemuFacts?: Pick<DiskInfo, 'clusterSize' | 'dirty' | 'parentFormat' | 'specific'>;
}

export async function oneFileInfo(image: ImageData, f: OneFileFacts): Promise<DiskInfo> {
  const allocatedBytes = f.allocatedBytes ?? dataBytes(await image.blockStatus(0, image.capacity));
  const access = image.readOnly ? 'RDONLY' : 'RW';
  return {
    format: image.format,
    type: image.type,
    capacity: image.capacity,
    sectors: Math.floor(image.capacity / 512),
    ...('geometry' in f ? { geometry: f.geometry } : {}),
    numLinks: 1,
    ...f.links,
    ...f.qemuFacts,
    extents: [{ path: image.path, type: f.extentType ?? image.type.toUpperCase(), access, length: image.capacity, virtualOffset: 0, fileOffset: f.fileOffset ?? 0 }],
    allocatedBytes,
    fileSize: f.fileSize,
    diskSize: (await image.namespace.stat(image.path)).allocated ?? f.fileSize,
    readOnly: image.readOnly,
    files: [image.path],
    ...(f.warnings && f.warnings.length > 0 ? { warnings: [...f.warnings] } : {}),
  };
}
