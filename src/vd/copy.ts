/**
 * The copy loop of VDCopyEx: the content of a source view (images 0..nImage of a container, as
 * one ChainImage) into a destination container's top.
 *
 * - With the "same content" shortcut (nImageFromSame/nImageToSame) only the ranges the source
 *   images above nImageFromSame hold (block status depth below `aboveDepth`: data, and zero
 *   ranges that hide what is below) are read and written; nothing else of either chain is read.
 * - Without it every range of the disk is compared with what the destination reads, and only
 *   the chunks that differ are written (VD's redundant-I/O suppression): correct whatever the
 *   destination held, at the cost of reading both disks. Source ranges no image holds are not
 *   read (they are zeros).
 */
import { DiskError } from '../core/errors.js';
import type { CreateOptions, Image } from '../formats/types.js';
import type { Progress } from '../ops/convert.js';
import type { Namespace } from '../storage/namespace.js';

export interface CopyExOptions {
  /** a new image for the copy (VDCopyEx's pszFilename): a base in an empty destination, else a child of its top; without it the copy goes into the destination's top */
  path?: string;
  /** the new image's format (default: the source image's for a base, the destination top's for a child) */
  format?: string;
  /** the new base's size (cbSize; default the source's) */
  size?: number;
  /** nImageFromSame: the last source image whose content the destination's image `toSame` has too (VD_IMAGE_CONTENT_UNKNOWN: none) */
  fromSame?: number;
  /** nImageToSame */
  toSame?: number;
  /** VD_IMAGE_FLAGS_* of the new image */
  imageFlags?: number;
  /** UUID of the new image */
  uuid?: string;
  /** VD_OPEN_FLAGS_* the new image is opened with */
  openFlags?: number;
  /** where the new image is named (default: the destination's namespace) */
  namespace?: Namespace;
  createOptions?: Partial<CreateOptions>;
  overwrite?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export interface CopyExResult {
  /** bytes read from the source */
  bytesRead: number;
  /** bytes written into the destination */
  bytesWritten: number;
}

/** what the copy needs of the destination (its lock is held by the caller) */
export interface CopyTarget {
  capacity: number;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer): Promise<void>;
}

const CHUNK = 1024 * 1024;

export async function copyRanges(src: Image, dst: CopyTarget, opts: { aboveDepth?: number; signal?: AbortSignal; onProgress?: (p: Progress) => void }): Promise<CopyExResult> {
  const size = Math.min(src.capacity, dst.capacity);
  const status = size > 0 ? await src.blockStatus(0, size) : [];
  const shortcut = opts.aboveDepth !== undefined;
  const ranges = shortcut ? status.filter((r) => r.depth !== undefined && r.depth < opts.aboveDepth!) : status;
  const total = ranges.reduce((a, r) => a + r.length, 0);
  let done = 0;
  let bytesRead = 0;
  let bytesWritten = 0;
  for (const r of ranges) {
    for (let at = r.offset; at < r.offset + r.length; at += CHUNK) {
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: src.path }, { cause: opts.signal.reason });
      const n = Math.min(CHUNK, r.offset + r.length - at);
      let buf: Buffer;
      if (r.state === 'data') {
        buf = Buffer.allocUnsafe(n);
        await src.read(buf, at);
        bytesRead += n;
      } else buf = Buffer.alloc(n);
      // the shortcut's ranges are what changed; otherwise only what the destination lacks
      if (shortcut || !(await dst.read(at, n)).equals(buf)) {
        await dst.write(at, buf);
        bytesWritten += n;
      }
      done += n;
      opts.onProgress?.({ done, total, written: bytesWritten });
    }
  }
  return { bytesRead, bytesWritten };
}
