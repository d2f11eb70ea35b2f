/**
 * Reading a disk from a pipe (`vdkit convert - DST`): raw bytes, or an image whose driver can
 * parse its layout front to back (`Driver.sequential`, formats/sequential.ts: a streamOptimized
 * VMDK, formats/vmdk/stream/reader.ts). This file owns the input and the read-only Image over
 * it; no format's bytes are interpreted here.
 */
import type { Readable } from '../core/platform.js';
import { DiskError } from '../core/errors.js';
import { SECTOR_SIZE } from '../core/ints.js';
import { ChunkQueue } from '../binary/chunk-queue.js';
import type { ByteSink } from '../storage/sink.js';
import type { BlockExtent, DiskInfo, Image } from '../formats/types.js';
import type { SequentialInput, SequentialReader } from '../formats/sequential.js';
import { backends } from '../formats/registry.js';
import { SyntheticImage } from '../formats/common/synthetic-image.js';

export type { SequentialInput };

/** Exact-length reads from a Readable, with a little look-ahead buffered. */
class ByteReader implements SequentialReader {
  private readonly queue = new ChunkQueue();
  private readonly it: AsyncIterator<Buffer | string>;
  private ended = false;
  position = 0;

  constructor(
    readonly name: string,
    input: Readable,
  ) {
    this.it = input[Symbol.asyncIterator]();
  }

  private async fill(n: number): Promise<void> {
    while (this.queue.length < n && !this.ended) {
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        break;
      }
      this.queue.push(typeof r.value === 'string' ? Buffer.from(r.value) : r.value);
    }
  }

  /** up to `n` bytes (fewer only at the end of the input) */
  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    const out = this.queue.take(Math.min(n, this.queue.length));
    this.position += out.length;
    return out;
  }

  async exactly(n: number, field: string): Promise<Buffer> {
    const b = await this.read(n);
    if (b.length < n) throw new DiskError('CORRUPT', 'the input ended early', { path: this.name, field, offset: this.position, expected: n, found: b.length });
    return b;
  }

  /** skip `n` bytes; false when the input ended first */
  async skip(n: number): Promise<boolean> {
    while (n > 0) {
      const b = await this.read(Math.min(n, 1024 * 1024));
      if (b.length === 0) return false;
      n -= b.length;
    }
    return true;
  }
}

export interface SequentialInputOptions {
  /** 'raw' or a driver with a sequential layout ('vmdk': streamOptimized); detected from the first sector when omitted */
  format?: string;
  /** raw input: its size in bytes, when known (needed for targets other than raw) */
  size?: number;
  /** for messages (default "-") */
  name?: string;
  /** how errors name `size` (default "size"; the CLI's is "--input-size") */
  sizeField?: string;
}

/** Look at the first sector and set up the right reader. */
export async function openSequentialInput(input: Readable, opts: SequentialInputOptions = {}): Promise<SequentialInput> {
  const name = opts.name ?? '-';
  const r = new ByteReader(name, input);
  const first = await r.read(SECTOR_SIZE);
  const readers = backends().filter((d) => d.sequential !== undefined);
  // the plain format (byte-granular: the disk's bytes as they are) reads any stream as is
  const plain = backends().find((d) => d.alignment === 1)!;
  const format = opts.format ?? readers.find((d) => d.sequential!.matches(first))?.name ?? plain.name;
  if (format === plain.name) return rawInput(r, first, name, opts.size, opts.sizeField ?? 'size');
  const seq = readers.find((d) => d.name === format)?.sequential;
  if (!seq) {
    throw new DiskError('NOTSUPPORTED', `only raw and ${readers.map((d) => d.sequential!.description).join(', ')} can be read from a pipe, not ${format}`, { path: name, field: 'format', found: format });
  }
  if (!seq.matches(first)) throw new DiskError('INVALIDDISK', `the input does not start with ${seq.header}`, { path: name, field: 'magicNumber' });
  return seq.open(r, first);
}

function rawInput(r: ByteReader, first: Buffer, name: string, size: number | undefined, field: string): SequentialInput {
  if (size !== undefined && (!Number.isSafeInteger(size) || size <= 0)) throw new DiskError('INVAL', 'size must be a positive whole number of bytes', { path: name, field, found: size });
  const CHUNK = 2 * 1024 * 1024;
  return {
    name,
    format: 'raw',
    type: 'raw',
    capacity: size,
    async *pieces() {
      let offset = 0;
      // the sector read to detect the format; what of it lies past `size` counts as excess input
      let head: Buffer = first;
      for (;;) {
        const want = size === undefined ? CHUNK : Math.min(CHUNK, size - offset);
        if (want <= 0) break;
        let data: Buffer;
        if (head.length > 0) {
          const rest = head.length < want ? await r.read(want - head.length) : Buffer.alloc(0);
          data = Buffer.concat([head.subarray(0, want), rest]);
          head = head.subarray(Math.min(want, head.length));
        } else data = await r.read(want);
        if (data.length === 0) break;
        yield { offset, data };
        offset += data.length;
        if (data.length < want) break;
      }
      if (size === undefined) return;
      // a size that disagrees with the input is a wrong parameter, not a damaged image: both ways
      // fail, so that a disk is never made from part of a stream, nor padded out with zeros
      if (offset < size) throw new DiskError('INVAL', `the input ended after ${offset} bytes, short of the size given`, { path: name, field, expected: size, found: offset });
      if (head.length > 0 || (await r.read(1)).length > 0) {
        throw new DiskError('INVAL', `the input goes on past the size given (${size} bytes); give its whole size`, { path: name, field, expected: size, found: `more than ${size}` });
      }
    },
  };
}

/**
 * A SequentialInput as a read-only Image, so that `convert` (any target format) can take a pipe
 * as its source. Reads must come in ascending order, as convert issues them; block status cannot
 * know more than "data" before the bytes have arrived, so the target's zero detection finds the
 * holes.
 */
export class SequentialImage extends SyntheticImage implements Image {
  readonly clusterSize = 64 * 1024;
  readonly type: string;
  readonly format: string;
  private readonly it: AsyncIterator<{ offset: number; data: Buffer }>;
  private piece: { offset: number; data: Buffer } | undefined;
  private ended = false;
  private cursor = 0;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly input: SequentialInput,
    readonly capacity: number,
  ) {
    super();
    this.format = input.format;
    this.type = input.type;
    this.it = input.pieces()[Symbol.asyncIterator]();
  }

  get path(): string {
    return this.input.name;
  }

  read(into: Buffer, offset: number): Promise<void> {
    const run = this.queue.then(() => this.readNow(into, offset));
    this.queue = run.catch(() => {});
    return run;
  }

  private async readNow(into: Buffer, offset: number): Promise<void> {
    if (offset < this.cursor) throw new DiskError('NOTSUPPORTED', 'a disk read from a pipe can only be read front to back', { path: this.path, offset });
    into.fill(0);
    const end = offset + into.length;
    for (;;) {
      if (!this.piece) {
        if (this.ended) break;
        const r = await this.it.next();
        if (r.done) {
          this.ended = true;
          break;
        }
        this.piece = r.value;
      }
      const p = this.piece;
      const pEnd = p.offset + p.data.length;
      if (p.offset >= end) break;
      const from = Math.max(p.offset, offset);
      const to = Math.min(pEnd, end);
      if (to > from) p.data.copy(into, from - offset, from - p.offset, to - p.offset);
      if (pEnd <= end) this.piece = undefined;
      else break;
    }
    this.cursor = end;
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return [{ offset, length, state: 'data' }];
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
  async info(): Promise<DiskInfo> {
    return { format: this.format, type: this.type, capacity: this.capacity, sectors: Math.ceil(this.capacity / SECTOR_SIZE), numLinks: 1, extents: [], files: [], allocatedBytes: this.capacity, fileSize: 0, diskSize: 0, readOnly: true };
  }
}

/** raw input straight to a sink, gaps as zeros (for `convert -f raw - -O raw -`) */
export async function copyPieces(input: SequentialInput, sink: ByteSink): Promise<void> {
  const zeros = Buffer.alloc(1024 * 1024);
  for await (const p of input.pieces()) {
    for (let gap = p.offset - sink.position; gap > 0; gap -= zeros.length) await sink.append(zeros.subarray(0, Math.min(gap, zeros.length)));
    await sink.append(p.data);
  }
  await sink.flush();
}
