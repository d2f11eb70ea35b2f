/**
 * Clone a chain link by link, keeping it a chain (VDCopyEx with nImageFromSame/ToSame, VMware's
 * "clone with snapshots"): a source chain base..top, of any formats, becomes a new chain of the
 * same length in one target format that supports children.
 *
 * Design notes
 * - Links are numbered from the base (0) up to the top (n-1), as VirtualBox numbers images.
 *   `from`/`to` (VDCopyEx's nImageFrom/nImageTo) pick the links copied: what lies below `from`
 *   is flattened into the new base, links above `to` are left out. One link copied is a plain
 *   convert of the chain up to that link.
 * - The new base is the flattened content of source links 0..from (only its data ranges are
 *   read; all-zero blocks are not written). Each later link is created as a child of the new
 *   link below it (ops/child.ts childCreateOptions: hint, parent CID/UUID, inherited VMDK keys,
 *   qcow2 backing format, VHD/VHDX locators) and receives exactly the ranges its source link
 *   holds itself (block status of that link alone: data, and zero ranges that hide the parent).
 *   It is written through a ChainImage over the new links below, so where the target's cluster
 *   is larger than the source's the rest of the cluster is copied up from below, as any write
 *   to a child does. An all-zero block is skipped only where the new chain below reads zeros.
 * - Sizes: formats whose children must match their parent (VMDK, VHD, VHDX, VDI) give every
 *   link the size of the new top; qcow2 keeps each link's own size. `capacity` (resize) applies
 *   to every link. Where a source link is shorter than its new link, the part past its end read
 *   as zeros in the source chain and is written as zeros over a lower link that has data there.
 * - Names (chainLinkNames): the top is `dstPath`; the base is `<stem>-base<ext>` and the links in
 *   between `<stem>-base-000001<ext>`, `-000002`, ... upwards: defaultChildPath's names for
 *   children of the base, so vdkit's and VMware's naming stay one scheme. Without `overwrite`
 *   none of them may exist; none may ever be a file of the source chain.
 * - Crash safety (chain/NOTES.md "Clone keeping the chain"): every link is written under a hidden
 *   temporary name, but created recording its parent's final name (what it records from the
 *   parent's bytes, CreateOptions.parent.facts, is read from the parent's temporary copy). When all links are complete they are renamed
 *   base first, top last, so `dstPath` appears only when the whole chain is there. A record file
 *   beside the top lists the final names and, from the start of the renames, that the lower ones
 *   may be in place; a later clone or convert to the same name removes what a killed one left:
 *   its temporary files, and links it renamed when the top never was.
 */
import { basename, dirname, extname, join } from '../core/names.js';
import { DiskError } from '../core/errors.js';
import { hostFiles } from '../storage/file.js';
import { ChainImage } from '../chain/chain.js';
import { DEFAULT_FORMAT, driverByName } from '../formats/registry.js';
import type { Image } from '../formats/types.js';
import { Disk, openLinkIn } from '../disk.js';
import { childCreateOptions } from './child.js';
import { copyRanges, dataRanges, moveIntoPlace, targetCapacity, type ConvertOptions, type ConvertResult } from './convert.js';
import { linkFiles, namingTargets, partialPath, recordPath, removeStalePartials, writeRecord, type CloneRecord } from './partials.js';
import { throttleProgress } from '../core/progress.js';

export interface CloneChainOptions extends ConvertOptions {
  /** the lowest source link copied as a link of its own, 0 = the base (default 0); links below it are flattened into the new base */
  from?: number;
  /** the highest source link copied, 0 = the base (default: the top) */
  to?: number;
  /** opening a source given by path: refuse parent hints that leave its folder */
  untrusted?: boolean;
  /** called after each step ("link 0 written", "renamed <path>", ...); tests stop clones there */
  onStep?: (step: string) => Promise<void> | void;
}

export interface CloneChainResult extends ConvertResult {
  /** the new links, base first (the last is `dstPath`) */
  links: string[];
}

/** The names of a new chain of `count` links whose top is `dstPath`, base first. */
export function chainLinkNames(dstPath: string, count: number): string[] {
  const ext = extname(dstPath);
  const base = join(dirname(dstPath), `${basename(dstPath, ext)}-base`);
  const names: string[] = [];
  for (let k = 0; k < count - 1; k++) names.push(k === 0 ? `${base}${ext}` : `${base}-${String(k).padStart(6, '0')}${ext}`);
  names.push(dstPath);
  return names;
}

/** read [offset, offset+into.length) of one link; past its end reads as zeros */
async function readClamped(img: Image, into: Buffer, offset: number): Promise<void> {
  const inside = Math.max(0, Math.min(into.length, img.capacity - offset));
  if (inside < into.length) into.fill(0, inside);
  if (inside > 0) await img.read(into.subarray(0, inside), offset);
}

export async function cloneChain(src: Disk | string, dstPath: string, opts: CloneChainOptions = {}): Promise<CloneChainResult> {
  opts = { ...opts, onProgress: throttleProgress(opts.onProgress) };
  const own = typeof src === 'string' ? await Disk.open(src, { namespace: opts.namespace, readOnly: true, untrusted: opts.untrusted }) : undefined;
  try {
    return await cloneOpen(own ?? (src as Disk), dstPath, opts);
  } finally {
    await own?.close();
  }
}

async function cloneOpen(src: Disk, dstPath: string, opts: CloneChainOptions): Promise<CloneChainResult> {
  // source links, base first
  const layers = src.image instanceof ChainImage ? [...src.image.layers].reverse() : [src.image];
  const n = layers.length;
  const from = opts.from ?? 0;
  const to = opts.to ?? n - 1;
  for (const [field, v] of [['from', from], ['to', to]] as const) {
    if (!Number.isSafeInteger(v) || v < 0 || v >= n) throw new DiskError('INVAL', `a link number from 0 (the base) to ${n - 1} (the top)`, { path: src.path, field, expected: `0..${n - 1}`, found: v });
  }
  if (from > to) throw new DiskError('INVAL', `from (${from}) is above to (${to})`, { path: src.path, field: 'from', expected: `<= ${to}`, found: from });
  const count = to - from + 1;
  const format = opts.format ?? DEFAULT_FORMAT;
  const caps = driverByName(format).capabilities;
  if (count > 1 && !caps.differencing) {
    throw new DiskError('NOTSUPPORTED', `${format} images cannot be children, so a chain cannot be kept in ${format} (convert without keeping the chain flattens it)`, { path: dstPath, field: 'format', found: format });
  }
  const kidType = count > 1 ? driverByName(format).childType?.(opts.type, dstPath) : undefined;
  const ns = opts.namespace ?? hostFiles();
  const finals = chainLinkNames(ns.absolute(dstPath), count);
  const temps = finals.map((f) => partialPath(f));
  // every link the size of the new top where children must match their parent; else its own
  const wanted = (k: number) => opts.capacity ?? (caps.differencingSameSize ? layers[to]!.capacity : layers[from + k]!.capacity);
  const newCap = finals.map((_, k) => targetCapacity(format, wanted(k)));

  // what killed clones to these names left, first: their renamed links would otherwise block the names
  for (const f of [...finals].reverse()) await removeStalePartials(ns, f);
  const sourceFiles = new Set<string>();
  // the same file is the same name in the same namespace (symbolic links resolved)
  const sameNs = layers.every((l) => l.namespace === ns);
  if (sameNs) for (const l of layers) for (const f of (await l.info()).files) sourceFiles.add(await ns.realName(f).catch(() => ns.absolute(f)));
  for (const f of [...finals].reverse()) {
    if (sourceFiles.has(ns.absolute(f)) || ((await ns.exists(f)) && sourceFiles.has(await ns.realName(f)))) {
      throw new DiskError('INVAL', 'the new chain would replace a file of the chain it is copied from', { path: f, field: 'dstPath' });
    }
    if (!opts.overwrite && (await ns.exists(f))) throw new DiskError('FILEEXISTS', undefined, { path: f });
  }

  // the plan: the base's data ranges (positions, as convert counts them), then each link's own ranges
  const chunkSize = opts.chunkSize ?? 2 * 1024 * 1024;
  const zeroBlockSize = opts.zeroBlockSize ?? 64 * 1024;
  const baseSource = Disk.from(from === 0 ? layers[0]! : new ChainImage(layers.slice(0, from + 1).reverse()));
  const baseSpan = Math.min(newCap[0]!, baseSource.capacity);
  const plans: { offset: number; length: number }[][] = [await dataRanges(baseSource, baseSpan)];
  for (let k = 1; k < count; k++) {
    const layer = layers[from + k]!;
    const inside = Math.min(newCap[k]!, layer.capacity);
    const ranges = inside > 0 ? (await layer.blockStatus(0, inside)).filter((r) => r.state !== 'unallocated').map((r) => ({ offset: r.offset, length: r.length })) : [];
    // past the source link's end its chain read zeros: hide whatever the new links below have there
    if (newCap[k]! > layer.capacity) ranges.push({ offset: layer.capacity, length: newCap[k]! - layer.capacity });
    plans.push(ranges);
  }
  const total = baseSpan + plans.slice(1).reduce((a, rs) => a + rs.reduce((b, r) => b + r.length, 0), 0);
  let done = 0;
  let written = 0;
  const report = () => opts.onProgress?.({ done, total, written });

  const record = recordPath(finals[count - 1]!);
  const rec: CloneRecord = { version: 1, links: finals, mayBeInPlace: [] };
  /** lower links this run has renamed into place */
  const placed: string[] = [];
  const tempFiles: string[] = [];
  /** the new links written so far, opened read-only, top first */
  const lower: Image[] = [];
  let writing: Image | undefined;
  let topInPlace = false;
  try {
    await writeRecord(ns, record, rec);
    report();
    for (let k = 0; k < count; k++) {
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: finals[k] }, { cause: opts.signal.reason });
      let dst: Disk;
      let below: Disk | undefined;
      let read: (into: Buffer, offset: number) => Promise<void>;
      if (k === 0) {
        dst = await Disk.create(temps[0]!, { ...opts, namespace: ns, format, capacity: newCap[0]!, overwrite: true });
        read = (into, at) => baseSource.readInto(into, at);
      } else {
        const parent = lower[0]!;
        const spec = childCreateOptions(parent, finals[k - 1]!, finals[k]!, {
          format,
          type: kidType,
          capacity: caps.differencingSameSize ? parent.capacity : newCap[k]!,
          overwrite: true,
          createOptions: { clusterSize: opts.clusterSize, blockSize: opts.blockSize },
          namespace: ns,
        });
        const child = await Disk.create(temps[k]!, spec);
        // writes go through the new chain, so a target cluster larger than the source's is
        // filled from below (copy-on-write) like any write to a child
        dst = Disk.from(new ChainImage([child.image, ...lower]));
        below = Disk.from(lower.length === 1 ? lower[0]! : new ChainImage([...lower]));
        const layer = layers[from + k]!;
        read = (into, at) => readClamped(layer, into, at);
      }
      const top = (dst.image instanceof ChainImage ? dst.image.layers[0] : dst.image)!;
      writing = top;
      tempFiles.push(...(await top.info()).files);
      await copyRanges(read, dst, plans[k]!, {
        chunkSize,
        zeroBlockSize,
        signal: opts.signal,
        label: finals[k]!,
        below,
        onChunk: (c, w) => {
          written += w;
          done = k === 0 ? c.offset + c.length : done + c.length;
          report();
        },
      });
      if (k === 0) done = baseSpan;
      await dst.flush();
      writing = undefined;
      await top.close();
      lower.unshift(await openLinkIn(ns, temps[k]!, { readOnly: true, format }));
      await opts.onStep?.(`link ${k} written`);
    }
    for (const l of lower.splice(0)) await l.close();
    if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: dstPath }, { cause: opts.signal.reason });
    // every link is complete: into place base first, the top (dstPath) last; the record says so
    // first, in one write, so a kill between any rename and the next leaves nothing unrecorded
    rec.mayBeInPlace = finals.slice(0, -1);
    await writeRecord(ns, record, rec);
    for (let k = 0; k < count; k++) {
      if (driverByName(format).selfNaming) {
        // the descriptor names its extents (a monolithic one, itself): VMDK renames them too
        const img = await openLinkIn(ns, temps[k]!, { cowByCaller: true, preserveIdentity: true, format });
        await moveIntoPlace(img, finals[k]!);
      } else {
        await ns.rename(temps[k]!, finals[k]!);
      }
      if (k === count - 1) topInPlace = true;
      else placed.push(finals[k]!);
      await opts.onStep?.(`renamed ${finals[k]}`);
    }
    done = total;
    report();
  } catch (err) {
    await writing?.close().catch(() => {});
    for (const l of lower) await l.close().catch(() => {});
    if (!topInPlace) {
      for (const f of tempFiles) if (basename(f).includes('.vdkit-partial-')) await ns.remove(f).catch(() => {});
      for (const f of temps) await ns.remove(f).catch(() => {});
      for (const l of placed) for (const f of await linkFiles(ns, l)) await ns.remove(f).catch(() => {});
    }
    await ns.remove(record).catch(() => {});
    throw namingTargets(err, finals);
  }
  await ns.remove(record).catch(() => {});
  return { bytesWritten: written, bytesSkipped: total - written, links: finals };
}
