/**
 * Reading a disk from a pipe (`vdkit convert - DST`): raw bytes, or a streamOptimized VMDK walked
 * sector by sector as VirtualBox's sequential mode does (vmdk.md §4.5 step 3). Nothing can be
 * sought, so a stream is read by its markers alone: the grain tables and directory are skipped,
 * since every grain marker carries its own LBA. That walk works for all three producer layouts:
 * VMware's (tables after the data), open-vmdk's and QEMU's (tables before `overHead`, which the
 * walk starts at), with or without an end-of-stream marker.
 *
 * Every count read from the input bounds only how far we skip or how much we inflate into a
 * buffer of one grain; nothing is allocated from an untrusted size.
 */
import type { Readable } from '../core/platform.js';
import { inflate, promisify } from '../core/platform.js';
import { DiskError } from '../core/errors.js';
import { SECTOR_SIZE, toSafeNumber } from '../core/ints.js';
import type { ByteSink } from '../storage/sink.js';
import { MemoryNamespace } from '../storage/memory.js';
import type { Namespace } from '../storage/namespace.js';
import type { BlockExtent, Capabilities, DiskInfo, Image } from '../formats/types.js';
import { FLAG_COMPRESSED, FLAG_MARKERS, COMPRESSION_DEFLATE, GRAIN_MARKER_HEAD, MARKER_EOS, SPARSE_MAGIC, SparseExtentHeader } from '../formats/vmdk/structs.js';

const inflateAsync = promisify(inflate);

/** A disk read front to back: pieces in ascending, non-overlapping order; gaps read as zeros. */
export interface SequentialInput {
  readonly name: string;
  readonly format: 'raw' | 'vmdk';
  /** virtual size; undefined for raw input until it has been read to the end */
  readonly capacity: number | undefined;
  pieces(): AsyncIterable<{ offset: number; data: Buffer }>;
}

/** Exact-length reads from a Readable, with a little look-ahead buffered. */
class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
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
    while (this.buffered < n && !this.ended) {
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        break;
      }
      const b = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
      this.chunks.push(b);
      this.buffered += b.length;
    }
  }

  /** up to `n` bytes (fewer only at the end of the input) */
  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    const take = Math.min(n, this.buffered);
    let out: Buffer;
    if (this.chunks.length > 0 && this.chunks[0]!.length >= take) {
      out = this.chunks[0]!.subarray(0, take);
      this.chunks[0] = this.chunks[0]!.subarray(take);
      if (this.chunks[0]!.length === 0) this.chunks.shift();
    } else {
      out = Buffer.allocUnsafe(take);
      let at = 0;
      while (at < take) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length, take - at);
        c.copy(out, at, 0, k);
        at += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.buffered -= take;
    this.position += take;
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
  /** 'raw' or 'vmdk' (streamOptimized); detected from the first sector when omitted */
  format?: string;
  /** raw input: its size in bytes, when known (needed for targets other than raw) */
  size?: number;
  /** for messages (default "-") */
  name?: string;
}

/** Look at the first sector and set up the right reader. */
export async function openSequentialInput(input: Readable, opts: SequentialInputOptions = {}): Promise<SequentialInput> {
  const name = opts.name ?? '-';
  const r = new ByteReader(name, input);
  const first = await r.read(SECTOR_SIZE);
  const isVmdk = first.length >= 4 && first.readUInt32LE(0) === SPARSE_MAGIC;
  const format = opts.format ?? (isVmdk ? 'vmdk' : 'raw');
  if (format === 'raw') return rawInput(r, first, name, opts.size);
  if (format !== 'vmdk') {
    throw new DiskError('NOTSUPPORTED', `only raw and streamOptimized VMDK can be read from a pipe, not ${format}`, { path: name, field: 'format', found: format });
  }
  if (!isVmdk) throw new DiskError('INVALIDDISK', 'the input does not start with a VMDK sparse header', { path: name, field: 'magicNumber' });
  return streamInput(r, first, name);
}

function rawInput(r: ByteReader, first: Buffer, name: string, size: number | undefined): SequentialInput {
  if (size !== undefined && (!Number.isSafeInteger(size) || size <= 0)) throw new DiskError('INVAL', 'size must be a positive whole number of bytes', { path: name, field: 'size', found: size });
  const CHUNK = 2 * 1024 * 1024;
  return {
    name,
    format: 'raw',
    capacity: size,
    async *pieces() {
      let offset = 0;
      let head: Buffer | undefined = first;
      for (;;) {
        const want = size === undefined ? CHUNK : Math.min(CHUNK, size - offset);
        if (want <= 0) break;
        let data: Buffer;
        if (head) {
          const rest = head.length < want ? await r.read(want - head.length) : Buffer.alloc(0);
          data = Buffer.concat([head.subarray(0, want), rest]);
          head = undefined;
        } else data = await r.read(want);
        if (data.length === 0) break;
        yield { offset, data };
        offset += data.length;
        if (data.length < want) break;
      }
      if (size !== undefined && offset < size) {
        throw new DiskError('CORRUPT', 'the input ended before the size given', { path: name, field: 'size', expected: size, found: offset });
      }
    },
  };
}

function streamInput(r: ByteReader, first: Buffer, name: string): SequentialInput {
  if (first.length < SECTOR_SIZE) throw new DiskError('CORRUPT', 'the input ended inside the header', { path: name, field: 'header', expected: SECTOR_SIZE, found: first.length });
  const h = SparseExtentHeader.decode(first, 0, name);
  const bad = (field: string, message: string, expected: unknown, found: unknown) => new DiskError('CORRUPT', message, { path: name, field, expected: String(expected), found: String(found) });
  if ((h.flags & FLAG_COMPRESSED) === 0 || (h.flags & FLAG_MARKERS) === 0) {
    throw new DiskError('NOTSUPPORTED', 'only streamOptimized VMDKs (compressed grains with markers) can be read from a pipe', { path: name, field: 'flags', found: `0x${h.flags.toString(16)}` });
  }
  if (h.compressAlgorithm !== COMPRESSION_DEFLATE) throw new DiskError('CMPUNSUP', undefined, { path: name, field: 'compressAlgorithm', found: h.compressAlgorithm });
  const grainSectors = toSafeNumber(h.grainSize, { path: name, field: 'grainSize' });
  if (grainSectors < 1 || grainSectors > 2048 || (grainSectors & (grainSectors - 1)) !== 0) throw bad('grainSize', 'invalid grain size', 'a power of two <= 2048 sectors', grainSectors);
  const capacitySectors = toSafeNumber(h.capacity, { path: name, field: 'capacity' });
  const capacity = capacitySectors * SECTOR_SIZE;
  if (capacitySectors <= 0 || !Number.isSafeInteger(capacity)) throw bad('capacity', 'invalid capacity', 'a positive number of sectors', h.capacity);
  const overHead = toSafeNumber(h.overHead, { path: name, field: 'overHead' });
  if (overHead < 1) throw bad('overHead', 'grains cannot start inside the header', '>= 1', overHead);
  const grainBytes = grainSectors * SECTOR_SIZE;
  return {
    name,
    format: 'vmdk',
    capacity,
    async *pieces() {
      if (!(await r.skip(overHead * SECTOR_SIZE - SECTOR_SIZE))) return;
      // a few inflates run on libuv's threads while the next markers are parsed
      const pending: Promise<{ offset: number; data: Buffer }>[] = [];
      let lastLba = -1;
      for (;;) {
        const head = await r.read(SECTOR_SIZE);
        if (head.length === 0) break; // QEMU's streams have no end-of-stream marker
        if (head.length < SECTOR_SIZE) throw bad('marker', 'the input ends inside a sector', SECTOR_SIZE, head.length);
        const val = head.readBigUInt64LE(0);
        const size = head.readUInt32LE(8);
        if (size === 0) {
          const type = head.readUInt32LE(12);
          if (type === MARKER_EOS) break;
          // GT, GD, footer or an unknown (progress) marker: skip what it says follows
          if (val > BigInt(Number.MAX_SAFE_INTEGER) / 512n) throw bad('marker', 'metadata marker too long', 'a sector count', val);
          if (!(await r.skip(Number(val) * SECTOR_SIZE))) throw bad('marker', 'the input ended inside a metadata block', `${val} sectors`, 'end of input');
          continue;
        }
        if (size > 2 * grainBytes) throw bad('size', 'compressed grain too large', `<= ${2 * grainBytes}`, size);
        if (val % BigInt(grainSectors) !== 0n || val >= BigInt(capacitySectors)) throw bad('lba', 'grain marker LBA not on a grain inside the disk', `a multiple of ${grainSectors} below ${capacitySectors}`, val);
        const lba = Number(val);
        if (lba <= lastLba) throw bad('lba', 'grains are not in ascending order (a stream read from a pipe must be)', `> ${lastLba}`, lba);
        lastLba = lba;
        const padded = Math.ceil((GRAIN_MARKER_HEAD + size) / SECTOR_SIZE) * SECTOR_SIZE;
        const rest = await r.exactly(padded - SECTOR_SIZE, 'grain');
        const z = Buffer.concat([head.subarray(GRAIN_MARKER_HEAD), rest]).subarray(0, size);
        const offset = lba * SECTOR_SIZE;
        const limit = Math.min(grainBytes, capacity - offset);
        const p = inflateAsync(z, { maxOutputLength: grainBytes, finishFlush: 2 }).then(
          (data) => {
            // a last grain inflates to a whole grain (VirtualBox wants that); the part past the end goes
            return { offset, data: data.length > limit ? data.subarray(0, limit) : data };
          },
          (err: unknown) => {
            throw new DiskError('ZLIB', 'cannot inflate compressed grain', { path: name, field: 'data', offset: lba * SECTOR_SIZE }, { cause: err });
          },
        );
        p.catch(() => {});
        pending.push(p);
        if (pending.length >= 8) yield await pending.shift()!;
      }
      while (pending.length > 0) yield await pending.shift()!;
    },
  };
}

const SEQUENTIAL_CAPABILITIES: Capabilities = {
  write: 'none',
  blockStatus: 'native',
  zero: 'none',
  metadata: false,
  createTypes: [],
  differencing: false,
  differencingSameSize: false,
  parentLink: 'name',
  identityFollowsContent: false,
  split: false,
  discard: 'none',
  resize: 'none',
  flush: 'concurrent',
  check: 'none',
  compact: 'none',
  defragment: 'none',
};

/**
 * A SequentialInput as a read-only Image, so that `convert` (any target format) can take a pipe
 * as its source. Reads must come in ascending order, as convert issues them; block status cannot
 * know more than "data" before the bytes have arrived, so the target's zero detection finds the
 * holes.
 */
export class SequentialImage implements Image {
  readonly readOnly = true;
  readonly capabilities = SEQUENTIAL_CAPABILITIES;
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
    this.format = input.format;
    this.type = input.format === 'vmdk' ? 'streamOptimized' : 'raw';
    this.it = input.pieces()[Symbol.asyncIterator]();
  }

  get path(): string {
    return this.input.name;
  }

  /** a pipe is no name in any namespace: nothing is ever looked up beside it */
  get namespace(): Namespace {
    return (this.names ??= new MemoryNamespace());
  }
  private names: Namespace | undefined;

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

  async write(): Promise<void> {
    throw new DiskError('RDONLY', undefined, { path: this.path });
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return [{ offset, length, state: 'data' }];
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
  async flush(): Promise<void> {}
  async close(): Promise<void> {
    await this.it.return?.();
  }
  async info(): Promise<DiskInfo> {
    return { format: this.format, type: this.type, capacity: this.capacity, sectors: Math.ceil(this.capacity / SECTOR_SIZE), numLinks: 1, extents: [], files: [], allocatedBytes: this.capacity, fileSize: 0, diskSize: 0, readOnly: true };
  }
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

/** raw input straight to a sink, gaps as zeros (for `convert -f raw - -O raw -`) */
export async function copyPieces(input: SequentialInput, sink: ByteSink): Promise<void> {
  const zeros = Buffer.alloc(1024 * 1024);
  for await (const p of input.pieces()) {
    for (let gap = p.offset - sink.position; gap > 0; gap -= zeros.length) await sink.append(zeros.subarray(0, Math.min(gap, zeros.length)));
    await sink.append(p.data);
  }
  await sink.flush();
}
