/**
 * Copy one disk into a new image of any format/type, driven by block status: only ranges the
 * source reports as data are read, and blocks that read as all zeros are not written, so the
 * target stays sparse. Reading the next chunks overlaps writing the current one.
 */
import { basename } from '../core/names.js';
import { DiskError } from '../core/errors.js';
import { DEFAULT_FORMAT, driverByName } from '../formats/registry.js';
import { hostFiles } from '../storage/file.js';
import { DeferredSyncNamespace } from '../storage/deferred-sync.js';
import type { Namespace } from '../storage/namespace.js';
import type { ByteSink } from '../storage/sink.js';
import { Disk, type DiskCreateOptions } from '../disk.js';
import { convertCompressed, convertToRawSink, convertToStream, intoSequential } from './convert-stream.js';
import type { Image } from '../formats/types.js';
import { namingTargets, partialPath, removeStalePartials } from './partials.js';
import { copyRanges, DEFAULT_IN_FLIGHT, MAX_IN_FLIGHT } from './copy-ranges.js';
import { childCreateOptions } from './child.js';

export { copyRanges, type CopyRangesOptions } from './copy-ranges.js';
import { throttleProgress } from '../core/progress.js';

export interface Progress {
  /** virtual bytes processed so far */
  done: number;
  total: number;
  /** bytes actually written to the target */
  written: number;
}

export interface ConvertOptions extends Omit<DiskCreateOptions, 'capacity'> {
  /**
   * target capacity (default: the source's), rounded up to whole 512-byte sectors for every
   * format but raw: smaller drops what lies past the new end, larger adds a tail of zeros
   */
  capacity?: number;
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
  /** bytes per read (default 2 MiB) */
  chunkSize?: number;
  /** zero-detection granularity in bytes (default 64 KiB, the VMDK grain); sparseSize sets it from a user's value */
  zeroBlockSize?: number;
  /**
   * qemu-img convert -S: the shortest run of zeros (bytes, a multiple of 512 up to 16 MiB) left
   * unwritten, so it stays a hole. Rounded up to a whole number of the target's allocation units
   * (its clusterSize: qcow2 clusters, VMDK grains, VDI blocks; 512 for raw, VHD and VHDX, which
   * keep unwritten sectors as holes), since a smaller run inside a unit that is written anyway
   * takes space whatever is done. 0: write every byte, zeros too, so the target is fully allocated.
   */
  sparseSize?: number;
  /**
   * qemu-img convert -m: chunks read and written at once, 1 to 16 (default 3); for compressed and
   * streamOptimized output the compression threads (unless `workers` says)
   */
  inFlight?: number;
  /** qemu-img convert -W: writes may reach the target out of order, each chunk as soon as it is read */
  outOfOrder?: boolean;
  /**
   * qemu-img convert -n: write into the existing image at `dstPath` (opened as `format` when
   * given, else as its content says) instead of creating one. It must hold at least the
   * source's size; what lies past that is left as it is. Ranges that read as zeros in the source
   * are written as zeros where the target does not read zeros already.
   */
  existing?: boolean;
  /** with `existing` (qemu-img convert --target-is-zero): the target reads as zeros, so zero ranges are not written */
  targetIsZero?: boolean;
  /**
   * qemu-img convert -B/-F: create the target as a child of this image (`path` relative to the
   * target's folder, as a backing file name is; `format` detected when omitted) and write only
   * the blocks whose content differs from it, so a source that mostly equals it makes a small child
   */
  backing?: { path: string; format?: string };
  /**
   * compressed output (qemu-img convert -c): qcow2 compressed clusters, or for VMDK the
   * streamOptimized type; other formats: NOTSUPPORTED
   */
  compress?: boolean;
  /** streamOptimized: zlib level 1-9 (default 1, as VMware writes); compressed qcow2: default 6, as QEMU */
  compressionLevel?: number;
  /** streamOptimized, compressed qcow2: compression threads (default one per core, at most 4) */
  workers?: number;
  /**
   * streamOptimized or raw: append the output to this sink (e.g. stdout) instead of creating
   * `dstPath`; `dstPath` then only supplies the name recorded in a stream's descriptor
   */
  sink?: ByteSink;
}

export interface ConvertResult {
  bytesWritten: number;
  bytesSkipped: number;
}

const DEFAULT_CHUNK = 2 * 1024 * 1024;
const DEFAULT_ZERO_BLOCK = 64 * 1024;

/**
 * The capacity a new image of `format` gets for a wanted size: every format but raw stores whole
 * 512-byte sectors, so a size in between is rounded up (the added tail reads as zeros), as
 * qemu-img convert does for a raw source of an odd size.
 */
export function targetCapacity(format: string, wanted: number): number {
  if (!Number.isSafeInteger(wanted) || wanted < 0) throw new DiskError('INVAL', 'capacity must be a whole number of bytes', { field: 'capacity', found: wanted });
  const unit = driverByName(format).alignment;
  return Math.ceil(wanted / unit) * unit;
}

/**
 * Move a finished image from its temporary name to `finalPath` and close it: one rename, or for
 * VMDKs (whose descriptor names its extents, and a monolithic one itself) extents first and
 * the descriptor last.
 */
export async function moveIntoPlace(img: Image, finalPath: string): Promise<void> {
  const m = img.maintenance();
  if (m.renameTo) {
    const files = (await img.info()).files;
    if (files.length > 1 || driverByName(img.format).selfNaming) {
      await m.renameTo(finalPath);
      await img.close().catch(() => {});
      return;
    }
  }
  const from = img.path;
  await img.close();
  await img.namespace.rename(from, finalPath);
}

/**
 * The data ranges of `src` over [0, length), each rounded out to whole `grain`s (the target's
 * zero-detection block) and merged where they then touch, or the whole span when finding them
 * would mean reading it all. A host file's holes come at 4 KiB: copied as they are, the data
 * between them becomes writes that start and end inside a cluster, which the target stores
 * piecewise (a qcow2 allocation ending mid-cluster stats and extends its file) at 1.2x the cost;
 * a rounded range reads the hole's zeros and the zero detection still skips whole zero blocks
 * (as qemu-img convert aligns block status to the target's cluster). The default, 1, keeps the
 * ranges as they are: a chain clone's links hold exactly what their sources hold.
 */
export async function dataRanges(src: Disk, length: number, grain = 1): Promise<{ offset: number; length: number }[]> {
  if (length === 0) return [];
  // An emulated block status would read the whole source once more: copy everything instead
  // and let the zero detection find the holes.
  if (src.image.capabilities.blockStatus === 'emulate') return [{ offset: 0, length }];
  const out: { offset: number; length: number }[] = [];
  for (const r of await src.blockStatus(0, length)) {
    if (r.state !== 'data') continue;
    const from = Math.floor(r.offset / grain) * grain;
    const to = Math.min(length, Math.ceil((r.offset + r.length) / grain) * grain);
    const last = out[out.length - 1];
    if (last && from <= last.offset + last.length) last.length = Math.max(last.length, to - last.offset);
    else out.push({ offset: from, length: to - from });
  }
  return out;
}

export async function convert(src: Disk, dstPath: string, opts: ConvertOptions = {}): Promise<ConvertResult> {
  opts = { ...opts, onProgress: throttleProgress(opts.onProgress) };
  try {
    return await convertTo(src, dstPath, opts);
  } catch (err) {
    throw namingTargets(err, [dstPath]);
  }
}

/** qemu-img's limit for -S: 16 MiB (its largest buffer) */
export const MAX_SPARSE_SIZE = 16 * 1024 * 1024;

function checkTuning(opts: ConvertOptions, dstPath: string): void {
  const s = opts.sparseSize;
  if (s !== undefined && (!Number.isSafeInteger(s) || s < 0 || s % 512 !== 0 || s > MAX_SPARSE_SIZE)) {
    throw new DiskError('INVAL', `the sparse size must be a multiple of 512 up to ${MAX_SPARSE_SIZE}, or 0 to allocate every byte`, { path: dstPath, field: 'sparseSize', found: s });
  }
  const m = opts.inFlight;
  if (m !== undefined && (!Number.isInteger(m) || m < 1 || m > MAX_IN_FLIGHT)) throw new DiskError('INVAL', `chunks in flight must be 1 to ${MAX_IN_FLIGHT}`, { path: dstPath, field: 'inFlight', found: m });
  const special = opts.compress ? 'compressed output' : opts.sink ? 'output to a pipe' : undefined;
  if (special && (opts.existing || opts.backing)) throw new DiskError('INVAL', `${special} makes a new image of its own: it cannot ${opts.existing ? 'write into an existing one' : 'be a child'}`, { path: dstPath, field: opts.existing ? 'existing' : 'backing' });
  // compressed and streamOptimized output compress on worker threads: inFlight sets how many (below)
  const tuned = opts.sparseSize !== undefined ? 'sparseSize' : opts.outOfOrder ? 'outOfOrder' : opts.inFlight !== undefined && opts.sink ? 'inFlight' : undefined;
  const sequential = opts.type !== undefined && opts.format !== undefined && driverByName(opts.format).sequentialTypes.includes(driverByName(opts.format).normaliseType(opts.type));
  if (tuned && (special || sequential)) throw new DiskError('INVAL', `${special ?? 'a streamOptimized target'} is written in one sequential pass of its own, which ${tuned} does not tune`, { path: dstPath, field: tuned });
  if (opts.existing && opts.backing) {
    throw new DiskError('INVAL', 'a backing image is given to a target as it is created; an existing target keeps its own (create it with a backing file, then convert into it)', { path: dstPath, field: 'backing' });
  }
  if (opts.targetIsZero && !opts.existing) throw new DiskError('INVAL', 'targetIsZero is about an existing target (existing)', { path: dstPath, field: 'targetIsZero' });
}

/**
 * The zero-detection block and the chunk for a target: -S rounded up to whole allocation units
 * of the target (see ConvertOptions.sparseSize), else the default; the chunk a whole number of
 * blocks, so no block is split between two chunks.
 */
function grainFor(dst: Disk, opts: ConvertOptions): { block: number; chunk: number } {
  let chunk = opts.chunkSize ?? DEFAULT_CHUNK;
  const unit = Math.max(1, dst.image.clusterSize);
  let block: number;
  if (opts.zeroBlockSize !== undefined) block = opts.zeroBlockSize;
  else if (opts.sparseSize) block = Math.ceil(opts.sparseSize / unit) * unit;
  // A target that allocates whole units bigger than 64 KiB (VDI: 1 MiB blocks) stores the
  // zeros around data in a unit anyway: looking for zeros per unit gives one write per unit
  // instead of one per run of data, with the same result. Not above a chunk; not for targets
  // that keep unwritten sectors of a block as holes (VHD, VHDX report one sector).
  else block = Math.min(chunk, Math.max(DEFAULT_ZERO_BLOCK, unit));
  chunk = Math.ceil(chunk / block) * block;
  return { block, chunk };
}

/** `a` and `b` (each sorted, not overlapping) merged into one sorted list where they touch */
function unionRanges(a: readonly { offset: number; length: number }[], b: readonly { offset: number; length: number }[]): { offset: number; length: number }[] {
  const all = [...a, ...b].sort((x, y) => x.offset - y.offset);
  const out: { offset: number; length: number }[] = [];
  for (const r of all) {
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.length) last.length = Math.max(last.length, r.offset + r.length - last.offset);
    else out.push({ ...r });
  }
  return out;
}

/**
 * What convert reads and how it writes, for a target `dst` over [0, total): the ranges (the
 * source's data, and also `other`'s where the target would read it unless overwritten: the
 * backing image of -B, the existing target of -n) and copyRanges' block rules.
 */
/**
 * Copy what `copyPlan` picks from `src` to `dst`, reporting progress from 0 to `total`; returns
 * the bytes written.
 */
async function copyReporting(src: Disk, dst: Disk, dstPath: string, total: number, opts: ConvertOptions, other: { disk: Disk; rule: 'sameAs' | 'below' } | undefined, sync?: () => Promise<void>): Promise<number> {
  let written = 0;
  let done = 0;
  const report = () => opts.onProgress?.({ done, total, written });
  report();
  const plan = await copyPlan(src, dst, total, opts, other);
  await copyRanges((buf, at) => src.readInto(buf, at), dst, plan.ranges, {
    ...plan.copy,
    label: dstPath,
    sync,
    onChunk: (c, n) => {
      written += n;
      done = Math.max(done, c.offset + c.length);
      report();
    },
  });
  done = total;
  report();
  return written;
}

async function copyPlan(src: Disk, dst: Disk, total: number, opts: ConvertOptions, other?: { disk: Disk; rule: 'sameAs' | 'below' }) {
  const { block, chunk } = grainFor(dst, opts);
  const allocateAll = opts.sparseSize === 0;
  // With -S the copy engine alone chooses the holes: a zero run it writes (shorter than -S, or
  // every byte with -S 0) is stored as data, where a driver would make a zero entry of it
  if (opts.sparseSize !== undefined && 'storeZeros' in dst.image) dst.image.storeZeros = true;
  let ranges: { offset: number; length: number }[];
  if (allocateAll) ranges = total > 0 ? [{ offset: 0, length: total }] : [];
  else {
    ranges = await dataRanges(src, total, block);
    if (other) ranges = unionRanges(ranges, await dataRanges(other.disk, Math.min(total, other.disk.capacity), block));
  }
  return {
    ranges,
    copy: {
      chunkSize: chunk,
      zeroBlockSize: block,
      allocateAll,
      inFlight: opts.inFlight ?? DEFAULT_IN_FLIGHT,
      outOfOrder: !!opts.outOfOrder,
      signal: opts.signal,
      sameAs: other?.rule === 'sameAs' ? other.disk : undefined,
      below: other?.rule === 'below' ? other.disk : undefined,
    },
  };
}

/** -n: copy `src` into the existing image at dstPath, which stays where it is (no temporary name) */
async function convertIntoExisting(src: Disk, dstPath: string, opts: ConvertOptions): Promise<ConvertResult> {
  const ns = opts.namespace ?? hostFiles();
  if (opts.capacity !== undefined) throw new DiskError('INVAL', 'an existing target keeps its size: give no capacity', { path: dstPath, field: 'capacity', found: opts.capacity });
  const dst = await Disk.open(dstPath, { namespace: ns, format: opts.format });
  let written = 0;
  const total = src.capacity;
  try {
    if (dst.capacity < total) throw new DiskError('INVAL', 'the existing target is smaller than the source', { path: dstPath, field: 'capacity', expected: `>= ${total}`, found: dst.capacity });
    if (opts.targetIsZero && dst.image.backing()) throw new DiskError('INVAL', 'a target with a backing file does not read as zeros: targetIsZero cannot be used', { path: dstPath, field: 'targetIsZero' });
    written = await copyReporting(src, dst, dstPath, total, opts, opts.targetIsZero ? undefined : { disk: dst, rule: 'below' });
    await dst.flush();
  } finally {
    await dst.close();
  }
  return { bytesWritten: written, bytesSkipped: total - written };
}

async function convertTo(src: Disk, dstPath: string, opts: ConvertOptions): Promise<ConvertResult> {
  checkTuning(opts, dstPath);
  if (opts.existing) return convertIntoExisting(src, dstPath, opts);
  // -m for output compressed on worker threads: that many threads
  if (opts.inFlight !== undefined && opts.workers === undefined) opts = { ...opts, workers: opts.inFlight };
  const format = opts.format ?? DEFAULT_FORMAT;
  const driver = driverByName(format);
  if (opts.compress) {
    if (driver.writeCompressed) return convertCompressed(driver, src, dstPath, opts);
    // a format whose only compressed form is a sequential type (VMDK: streamOptimized)
    const stream = driver.sequentialTypes[0];
    if (stream === undefined) throw new DiskError('NOTSUPPORTED', 'compressed output is written as qcow2 (compressed clusters) or vmdk (streamOptimized)', { path: dstPath, field: 'format', found: format });
    if (opts.type !== undefined && driver.normaliseType(opts.type) !== stream) throw new DiskError('INVAL', `compressed ${format} output is the ${stream} type`, { path: dstPath, field: 'type', expected: stream, found: opts.type });
    return convertToStream(src, dstPath, { ...opts, type: stream });
  }
  if (opts.type !== undefined && driver.sequentialTypes.includes(driver.normaliseType(opts.type))) return convertToStream(src, dstPath, opts);
  if (opts.sink) {
    if (driver.alignment !== 1) throw new DiskError('NOTSUPPORTED', 'only raw and streamOptimized VMDK can be written to a pipe', { path: opts.sink.name, field: 'format', found: format });
    return convertToRawSink(src, opts.sink, opts);
  }
  const capacity = targetCapacity(format, opts.capacity ?? src.capacity);
  const ns: Namespace = opts.namespace ?? hostFiles();
  // raw into storage that takes front-to-back output better (S3): every byte in order, as to a pipe
  if (ns.createSequential && driver.alignment === 1 && !opts.backing) return intoSequential(ns, dstPath, opts, capacity, (sink) => convertToRawSink(src, sink, { ...opts, capacity }));
  if (!opts.overwrite && (await ns.exists(dstPath))) throw new DiskError('FILEEXISTS', undefined, { path: dstPath });
  // The target is built under a hidden temporary name in the same folder and moved to its name
  // only when complete, so a killed convert never leaves something at `dstPath` that looks whole.
  const partial = partialPath(dstPath);
  await removeStalePartials(ns, dstPath);
  // nobody sees the target before its rename: its ordering flushes wait for one sync at the end
  const staging = new DeferredSyncNamespace(ns);
  // -B: the backing image, named as the target will name it (relative to the target's folder)
  const base = opts.backing ? await Disk.open(ns.resolve(dstPath, opts.backing.path), { namespace: ns, readOnly: true, format: opts.backing.format }) : undefined;
  let dst: Disk;
  try {
    const spec = base ? { ...opts, ...childCreateOptions(base.image, ns.resolve(dstPath, opts.backing!.path), partial, { format, type: opts.type, capacity, namespace: staging }) } : opts;
    dst = await Disk.create(partial, { ...spec, namespace: staging, capacity, overwrite: true });
  } catch (err) {
    await base?.close().catch(() => {});
    throw err;
  }
  let written = 0;
  // shrinking drops what lies past the new end; growing leaves the new tail unwritten (zeros)
  const total = Math.min(capacity, src.capacity);
  try {
    // a child of -B reads its parent where nothing is written: what equals the parent is skipped
    written = await copyReporting(src, dst, dstPath, total, opts, base ? { disk: base, rule: 'sameAs' } : undefined, () => staging.syncNow());
    // a stop asked for by the last report (a VixDiskLib progress function returning false at 100 %,
    // the only report after 0 % of a fast convert) still stops it: the target is not yet in place
    if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: dstPath }, { cause: opts.signal.reason });
    await dst.flush();
    await staging.seal();
    await moveIntoPlace(dst.image, dstPath);
  } catch (err) {
    // only the temporary files go: whatever was at dstPath before is untouched
    const files = await dst.info().then((i) => i.files).catch(() => [partial]);
    await dst.close().catch(() => {});
    for (const f of files) if (basename(f).includes('.vdkit-partial-')) await ns.remove(f).catch(() => {});
    throw err;
  } finally {
    await base?.close().catch(() => {});
  }
  return { bytesWritten: written, bytesSkipped: total - written };
}
