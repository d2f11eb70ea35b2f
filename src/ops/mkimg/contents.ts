/**
 * A partition's contents as a piece of the image to be: a host file (its raw bytes; holes from
 * SEEK_DATA/SEEK_HOLE), any disk image vdkit reads (its virtual disk, copied by allocation), a
 * size alone (an empty partition), or the bytes of a stream or a command's standard output.
 *
 * A stream has no size until it ends, and the size decides where every later partition and the
 * backup GPT go and what capacity the target's header records before its first byte is written.
 * So its bytes are read to the end before the layout, kept in memory as 64 KiB blocks with the
 * all-zero ones dropped (a filesystem image is mostly zeros), up to `streamLimit` bytes of data.
 */
import { DiskError } from '../../core/errors.js';
import { spawn } from '../../core/platform.js';
import { isZero } from '../../binary/zeros.js';
import { Disk } from '../../disk.js';
import type { Namespace } from '../../storage/namespace.js';
import type { Piece, SparseBytes } from './parts-image.js';

export type PartitionContents =
  /** a host file's bytes as they are (a name in `namespace` when one is given) */
  | { readonly file: string }
  /** the virtual disk of an image in any format vdkit reads (detected unless `format`) */
  | { readonly image: string; readonly format?: string }
  /** no contents: an empty partition of this many bytes */
  | { readonly size: number }
  /** the standard output of `sh -c command` (mkimg -p TYPE:-COMMAND) */
  | { readonly command: string }
  /** the bytes of a stream, read to its end */
  | { readonly stream: AsyncIterable<Uint8Array>; readonly name?: string };

/** the non-zero bytes held from one stream at most, by default (1 GiB) */
export const DEFAULT_STREAM_LIMIT = 1024 * 1024 * 1024;
const BLOCK = 64 * 1024;

export interface OpenedContents {
  readonly length: number;
  /** the piece at `offset` (undefined: nothing to write) */
  piece(offset: number): Piece | undefined;
  /** a disk the caller closes once the image is written */
  readonly disk?: Disk;
}

export interface ContentsContext {
  namespace?: Namespace;
  signal?: AbortSignal;
  streamLimit?: number;
  /** `partitions[i].contents`, for errors */
  field: string;
}

/** Read a stream into 64 KiB blocks, keeping only those that are not all zeros. */
async function gather(stream: AsyncIterable<Uint8Array>, name: string, ctx: ContentsContext): Promise<SparseBytes> {
  const limit = ctx.streamLimit ?? DEFAULT_STREAM_LIMIT;
  const blocks = new Map<number, Buffer>();
  let kept = 0;
  let length = 0;
  let cur = Buffer.alloc(BLOCK);
  let fill = 0;
  const close = () => {
    if (fill > 0 && !isZero(cur, 0, fill)) {
      kept += BLOCK;
      if (kept > limit) throw new DiskError('INVAL', `${name}: more than ${limit} bytes of data; a stream's bytes are held in memory until its size is known (raise streamLimit, or write them to a file)`, { path: name, field: ctx.field, expected: `<= ${limit}` });
      blocks.set(Math.floor((length - fill) / BLOCK), cur);
      cur = Buffer.alloc(BLOCK);
    } else cur.fill(0, 0, fill);
    fill = 0;
  };
  for await (const chunk of stream) {
    if (ctx.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: name }, { cause: ctx.signal.reason });
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    for (let at = 0; at < b.length; ) {
      const n = Math.min(BLOCK - fill, b.length - at);
      b.copy(cur, fill, at, at + n);
      fill += n;
      length += n;
      at += n;
      if (fill === BLOCK) close();
    }
  }
  close();
  return { blockSize: BLOCK, blocks, length };
}

/** sh -c `command`, its standard output gathered; a non-zero exit is an error naming the command */
async function runCommand(command: string, ctx: ContentsContext): Promise<SparseBytes> {
  const child = spawn('sh', ['-c', command], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  const stop = () => child.kill('SIGTERM');
  ctx.signal?.addEventListener('abort', stop, { once: true });
  try {
    const bytes = await gather(child.stdout!, `command ${JSON.stringify(command)}`, ctx).catch((err) => {
      stop();
      throw err;
    });
    const end = await exited;
    if (end.code !== 0) {
      throw new DiskError('FAIL', `the command ${JSON.stringify(command)} ${end.signal ? `was killed by ${end.signal}` : `exited with status ${end.code}`}`, { field: ctx.field, found: end.signal ?? end.code });
    }
    return bytes;
  } finally {
    ctx.signal?.removeEventListener('abort', stop);
  }
}

function diskPiece(disk: Disk): OpenedContents {
  return { length: disk.capacity, disk, piece: (offset) => ({ offset, length: disk.capacity, disk }) };
}

function sparsePiece(sparse: SparseBytes): OpenedContents {
  return { length: sparse.length, piece: (offset) => (sparse.blocks.size > 0 ? { offset, length: sparse.length, sparse } : undefined) };
}

/** Open (or run, or read) one partition's contents. */
export async function openContents(c: PartitionContents, ctx: ContentsContext): Promise<OpenedContents> {
  if ('size' in c) {
    if (!Number.isSafeInteger(c.size) || c.size <= 0) throw new DiskError('INVAL', 'a partition size is a whole number of bytes above 0', { field: `${ctx.field}.size`, found: c.size });
    return { length: c.size, piece: () => undefined };
  }
  if ('file' in c) return diskPiece(await Disk.open(c.file, { namespace: ctx.namespace, format: 'raw', readOnly: true }));
  if ('image' in c) return diskPiece(await Disk.open(c.image, { namespace: ctx.namespace, format: c.format, readOnly: true }));
  if ('command' in c) return sparsePiece(await runCommand(c.command, ctx));
  if ('stream' in c) return sparsePiece(await gather(c.stream, c.name ?? 'stream', ctx));
  throw new DiskError('INVAL', 'contents are one of file, image, size, command or stream', { field: ctx.field, found: JSON.stringify(c) });
}
