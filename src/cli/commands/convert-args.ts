/**
 * convert's qemu-img parity options (-n, --target-is-zero, -B/-F, -S, -m, -W, -U, -l): parsed
 * and checked together, with qemu-img's limits and its refusals of combinations that make no
 * sense, so each reaches ops/convert as an option it acts on (none is accepted and dropped).
 */
import type { OptionValues } from 'commander';
import type { ConvertOptions } from '../../ops/convert.js';
import type { SnapshotRef } from '../../formats/types.js';
import { UsageError, formatArg, num } from '../options.js';
import { DiskError } from '../../core/errors.js';

/** qemu-img's limits for -S and -m */
const MAX_SPARSE = 16 * 1024 * 1024;
const MAX_COROUTINES = 16;

/** `-l`'s spellings: snapshot.id=ID and/or snapshot.name=NAME, or a bare ID or NAME */
export function snapshotArg(text: string): SnapshotRef {
  if (!text.includes('=')) return { idOrName: text };
  const ref: SnapshotRef = {};
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? '' : part.slice(eq + 1);
    if (key === 'snapshot.id') ref.id = value;
    else if (key === 'snapshot.name') ref.name = value;
    else throw new UsageError(`-l: unknown parameter ${JSON.stringify(key)} (snapshot.id=ID, snapshot.name=NAME, or a bare ID or NAME)`);
  }
  return ref;
}

export async function convertTuning(o: OptionValues, src: string, dst: string): Promise<Partial<ConvertOptions> & { snapshot?: SnapshotRef }> {
  const out: Partial<ConvertOptions> & { snapshot?: SnapshotRef } = {};
  if (o.targetIsZero && !o.skipCreate) throw new UsageError('--target-is-zero requires use of -n flag');
  if (o.skipCreate) {
    // what only a new image has: refused, as qemu-img refuses -o with -n
    const creating = (
      [
        ['options', '-o'],
        ['type', '-t'],
        ['adapter', '-a'],
        ['hw', '--hw'],
        ['size', '--size'],
        ['overwrite', '--overwrite'],
        ['compress', '-c'],
        ['keepChain', '--keep-chain'],
        ['target', '--target'],
        ['backing', '-B'],
      ] as const
    ).filter(([k]) => o[k] !== undefined && o[k] !== false);
    if (creating.length > 0) {
      const what = creating.map(([, flag]) => flag).join(', ');
      throw new UsageError(`${what}: no effect when skipping image creation (-n): ${creating.some(([k]) => k === 'backing') ? 'give DST its backing file when creating it, then convert -n into it' : 'DST exists as it is'}`);
    }
    if (dst === '-') throw new UsageError('-n writes into an existing image: DST must be a file, not "-"');
    out.existing = true;
    out.targetIsZero = !!o.targetIsZero;
  }
  if (o.backingFormat !== undefined && o.backing === undefined) throw new UsageError('-F: a backing format needs a backing file (-B)');
  if (o.backing !== undefined) {
    if (o.compress) throw new UsageError('-B: compressed output makes a whole image of its own, not a child');
    if (o.keepChain) throw new UsageError('-B cannot be combined with --keep-chain (which makes the chain itself)');
    if (dst === '-') throw new UsageError('-B: a child is written to a file, not to stdout');
    out.backing = { path: String(o.backing), format: o.backingFormat === undefined ? undefined : await formatArg(o.backingFormat, '-F') };
  }
  if (o.sparseSize !== undefined) {
    const s = num(String(o.sparseSize), '-S');
    if (s % 512 !== 0 || s > MAX_SPARSE) throw new UsageError(`-S: invalid buffer size for sparse output ${JSON.stringify(o.sparseSize)}: valid sizes are multiples of 512 up to ${MAX_SPARSE}; 0 disables sparse detection (fully allocates output)`);
    out.sparseSize = s;
  }
  if (o.coroutines !== undefined) {
    const m = /^\d+$/.test(String(o.coroutines)) ? Number(o.coroutines) : NaN;
    if (!(m >= 1 && m <= MAX_COROUTINES)) throw new UsageError(`-m: invalid number of coroutines ${JSON.stringify(o.coroutines)}: allowed is 1 to ${MAX_COROUTINES}`);
    out.inFlight = m;
  }
  if (o.outOfOrder) out.outOfOrder = true;
  if ((out.sparseSize !== undefined || out.outOfOrder) && o.compress) {
    throw new UsageError(`${[out.sparseSize !== undefined && '-S', out.outOfOrder && '-W'].filter(Boolean).join(', ')}: compressed output (-c) is written in one sequential pass of its own, which this does not tune (-m sets its compression threads)`);
  }
  if (o.snapshot !== undefined) {
    if (src === '-') throw new UsageError('-l: a snapshot is read from an image file, not from stdin');
    if (o.keepChain) throw new UsageError('-l cannot be combined with --keep-chain (a snapshot is read as one disk)');
    out.snapshot = snapshotArg(String(o.snapshot));
  }
  if (o.bitmaps && o.skipCreate) throw new UsageError('--bitmaps cannot be combined with -n (the bitmaps are made with the new image)');
  if (o.bitmaps && src === '-') throw new UsageError('--bitmaps: a stream from stdin has no bitmaps');
  // -U (--force-share): vdkit takes no locks on the images it opens, so sharing is what it always does
  return out;
}

/**
 * --bitmaps (qemu-img convert): copy SRC's persistent dirty bitmaps into DST. Both ends must be
 * able to hold them (of vdkit's formats only qcow2 has them), as qemu-img requires. With none to
 * copy that is all; copying bitmaps themselves comes with bitmap support (issue 23), so an image
 * that has some is refused rather than converted without them.
 */
export function checkBitmaps(src: { path: string; format: string; readMetadata(key: string): string | undefined; metadataKeys(): string[] }, dstFormat: string): void {
  if (!src.metadataKeys().includes('bitmaps')) throw new UsageError(`--bitmaps: ${src.path} is ${src.format}, which has no persistent bitmaps (qcow2 has them)`);
  if (dstFormat !== 'qcow2') throw new UsageError(`--bitmaps: ${dstFormat} cannot hold persistent bitmaps (qcow2 can)`);
  const n = Number(src.readMetadata('bitmaps') ?? 0);
  if (n > 0) throw new DiskError('NOTSUPPORTED', `--bitmaps: copying persistent dirty bitmaps is not supported yet (${src.path} has ${n}); convert without --bitmaps leaves them out, as qemu-img does`, { path: src.path, field: 'bitmaps', found: n });
}
