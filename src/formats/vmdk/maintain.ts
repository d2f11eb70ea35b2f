/**
 * In-place maintenance of a VMDK link: check (and repair), rename, resize (grow), discard,
 * compact and defragment. The per-extent work is in check.ts, resize.ts and compact.ts (via
 * SparseExtent); this file walks the extents and keeps the descriptor last in every crash-safe
 * order (NOTES.md). Functions of a LinkState (state.ts); VmdkImage (image.ts) calls them.
 */
import { basename, dirname, join } from '../../core/names.js';
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE } from '../../core/ints.js';
import { writeAtomic } from '../../storage/namespace.js';
import type { CheckFinding, CheckOptions, CheckReport, InPlaceOptions, InPlaceResult } from '../types.js';
import { Descriptor } from './descriptor.js';
import type { FlatExtent } from './extents.js';
import { EsxSparseExtent } from './esx-sparse.js';
import { checkEsxExtent } from './esx-check.js';
import type { SparseExtent } from './sparse.js';
import { NO_PARENT, SPLIT_EXTENT_SECTORS as SPLIT_SECTORS, vmwareGeometry, writeFreshSparse } from './layout.js';
import type { LinkState } from './state.js';

export async function checkLink(this: LinkState, opts: CheckOptions): Promise<CheckReport> {
  const findings: CheckFinding[] = [];
  let leakedBytes = 0;
  const dryRun = opts.repair && !!opts.dryRun;
  // ESXi delta extents are only ever checked: a repair of a disk made of them writes nothing
  const esx = this.extents.some((e) => e instanceof EsxSparseExtent);
  if (opts.repair && !dryRun && this.readOnly && !esx) throw new DiskError('RDONLY', 'a repair needs the disk opened read-write (or a dry run)', { path: this.path });
  for (const e of this.extents) {
    if (e instanceof EsxSparseExtent) {
      const r = await checkEsxExtent(e);
      for (const f of r.findings) {
        const found: CheckFinding = { ...f, message: this.extents.length > 1 ? `${e.path}: ${f.message}` : f.message };
        if (opts.repair && f.kind !== 'warning') {
          found.message += ` (not repairable by vdkit: ESXi ${e.kind} files are repaired on ESXi, vmkfstools -x repair)`;
          found.notRepairable = true;
        }
        findings.push(found);
      }
      leakedBytes += r.leakedBytes;
      continue;
    }
    if (!e.sparse) continue;
    const r = await e.sparse.check(opts.repair, dryRun);
    for (const f of r.findings) findings.push({ ...f, message: this.extents.length > 1 ? `${e.path}: ${f.message}` : f.message });
    leakedBytes += r.leakedBytes;
  }
  return { path: this.path, format: 'vmdk', findings, leakedBytes, ...(dryRun ? { dryRun: true } : {}) };
}

/**
 * Rename this disk's files for a new descriptor path (VixDiskLib_Rename's file part): extents
 * named after the old stem get the new stem, extent lines are rewritten, and the descriptor is
 * written at its new name **last**, so a rename stopped half-way never leaves a disk at the new
 * name that is not whole. The image must be open read-write; it is closed afterwards.
 */
export async function renameLink(this: LinkState, newPath: string, opts: { keepOld?: boolean } = {}): Promise<void> {
  if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
  const oldStem = basename(this.path).replace(/\.vmdk$/i, '');
  const newStem = basename(newPath).replace(/\.vmdk$/i, '');
  const renamed = (name: string) => (name.startsWith(oldStem) ? newStem + name.slice(oldStem.length) : name);
  // a name of a previous, killed rename may be in the way of a hard link
  const ns = this.namespace;
  const move = async (from: string, to: string) => {
    if (!opts.keepOld) return ns.rename(from, to);
    await ns.remove(to);
    if (!(await ns.link(from, to))) await ns.rename(from, to);
  };
  if (this.embeddedIn) {
    // monolithic: the embedded extent line names the file itself (libvmdk and VirtualBox open it by that name)
    await this.changeDescriptor((d) => d.setExtents(d.extents().map((e) => ({ ...e, fileName: basename(newPath) }))));
    await this.close();
    await move(this.path, newPath);
    return;
  }
  const next = Descriptor.parse(this.descriptor.toString(), this.path);
  next.setExtents(next.extents().map((e) => (e.fileName === undefined ? e : { ...e, fileName: renamed(e.fileName) })));
  const moves = this.extents.flatMap((e) => (e.path && e.line.fileName && renamed(e.line.fileName) !== e.line.fileName ? [[e.path, join(dirname(e.path), renamed(basename(e.path)))] as const] : []));
  if (opts.keepOld) {
    // only this disk's own file (a link a stopped rename left) may be replaced: another
    // file of a new extent name belongs to someone else; checked before anything moves
    for (const [from, to] of moves) {
      if ((await ns.kind(to)) !== 'file') continue;
      const there = await ns.stat(to);
      const mine = await ns.stat(from).catch(() => undefined);
      if (!mine || mine.id !== there.id) {
        throw new DiskError('FILEEXISTS', `${basename(to)} exists and is not a file of this disk: the renamed extent would replace it`, { path: to, field: 'extent', found: basename(to) });
      }
    }
  }
  await this.close();
  for (const [from, to] of moves) await move(from, to);
  await writeAtomic(ns, newPath, Buffer.from(next.toString(), 'utf8'));
  if (!opts.keepOld && ns.absolute(newPath) !== ns.absolute(this.path)) await ns.remove(this.path);
}

/**
 * Grow the disk in place (VixDiskLib_Grow, vmware-vdiskmanager -x). The files take the new
 * size first, invisibly (the descriptor still gives the old extent sizes); the descriptor
 * (atomic replace, or the embedded one rewritten in place) is the last write and makes it
 * visible. Split disks get new extent files (-sNNN / -fNNN, split size as VMware's); a single
 * flat extent is extended; a monolithic sparse file grows its grain directory (sparse.ts
 * growTo). Closes the image.
 */
export async function resizeLink(this: LinkState, newCapacity: number): Promise<void> {
  try {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    if (!this.descriptorWritable) throw new DiskError('NOTSUPPORTED', 'a bare extent has no descriptor to record a new size in', { path: this.path });
    if (this.sparseExtents.some((x) => x.compressed)) {
      throw new DiskError('NOTSUPPORTED', 'streamOptimized disks cannot be resized in place: convert to monolithicSparse, resize, and convert back', { path: this.path, field: 'createType', found: this.type });
    }
    if (newCapacity < this.capacity) throw new DiskError('CANTSHRINK', 'VMDK disks can only grow', { path: this.path, field: 'size', found: newCapacity });
    const grow = (newCapacity - this.capacity) / SECTOR_SIZE;
    const lines = this.descriptor.extents();
    const last = this.extents[this.extents.length - 1]!;
    const split = /^twoGbMaxExtent/i.test(this.type) || this.extents.length > 1;
    if (last.line.type === 'ZERO' || last.line.access !== 'RW') throw new DiskError('NOTSUPPORTED', `the last extent is ${last.line.type} ${last.line.access}: nothing to grow`, { path: this.path, field: 'extents' });
    if (split) {
      const sparse = !!last.sparse;
      const stem = basename(this.path).replace(/\.vmdk$/i, '');
      const dir = dirname(this.path);
      let n = lines.length;
      const used = new Set(lines.map((l) => l.fileName));
      for (let left = grow; left > 0; ) {
        const sectors = Math.min(left, SPLIT_SECTORS);
        let name: string;
        do name = `${stem}-${sparse ? 's' : 'f'}${String(++n).padStart(3, '0')}.vmdk`;
        while (used.has(name));
        // a file of this name is no extent of the disk (a killed resize left it): overwrite
        const store = await this.namespace.create(join(dir, name), { overwrite: true });
        try {
          if (sparse) await writeFreshSparse(store, sectors, { grainSectors: last.sparse!.grainSectors }); // the disk's grain, not the default
          else await store.truncate(sectors * SECTOR_SIZE);
          await store.flush();
        } finally {
          await store.close();
        }
        lines.push({ access: 'RW', sectorCount: sectors, type: sparse ? 'SPARSE' : last.line.type, fileName: name, offsetSectors: 0 });
        left -= sectors;
      }
    } else {
      const line = lines[lines.length - 1]!;
      if (last.sparse) {
        await last.sparse.growTo(line.sectorCount + grow);
      } else {
        const flat = (last as FlatExtent).store;
        const oldEnd = line.offsetSectors * SECTOR_SIZE + line.sectorCount * SECTOR_SIZE;
        // bytes past the old extent end are dropped first, so the new range reads zeros
        if ((await flat.size()) > oldEnd) await flat.truncate(oldEnd);
        await flat.truncate(oldEnd + grow * SECTOR_SIZE);
        await flat.flush();
      }
      lines[lines.length - 1] = { ...line, sectorCount: line.sectorCount + grow };
    }
    await this.changeDescriptor((d) => {
      d.setExtents(lines);
      if (d.ddb('geometry.cylinders') !== undefined) {
        const g = vmwareGeometry(newCapacity / SECTOR_SIZE, d.ddb('adapterType') ?? 'ide', this.type === 'vmfs');
        d.setDdb('geometry.cylinders', String(g.cylinders));
        d.setDdb('geometry.heads', String(g.heads));
        d.setDdb('geometry.sectors', String(g.sectors));
      }
    });
  } finally {
    await this.close();
  }
}

/**
 * Discard (VDDiscardRanges, TRIM) in place: whole grains become GTE 0 in a base; in a child
 * GTE 1 where the header is version 2 with the zeroed-grain flag, else zeros are written (a
 * version-1 child has no marker that hides its parent). Parts of grains read zeros afterwards;
 * a part of a grain a child does not hold must come through the chain (ops/discard.ts).
 */
export async function discardLink(this: LinkState, offset: number, length: number): Promise<void> {
  refuseRelayout.call(this, 'discard');
  if (length === 0) return;
  if (!this.cidRenewed) await this.renewCid();
  const hasParent = this.parentCid !== NO_PARENT;
  for (let pos = offset; pos < offset + length; ) {
    const i = this.extentIndex(pos);
    const e = this.extents[i]!;
    const within = pos - this.starts[i]!;
    const n = Math.min(e.length - within, offset + length - pos);
    if (e.line.access !== 'RW') throw new DiskError('RDONLY', `extent is ${e.line.access}`, { path: e.path ?? this.path });
    await e.sparse!.discard(within, n, { hasParent, limit: e.length });
    pos += n;
  }
}

/**
 * Compact (VixDiskLib_Shrink, vmware-vdiskmanager -k) extent by extent: sparse.ts compact.
 * The content does not change, so the CID stays and children stay valid.
 */
export async function compactLink(this: LinkState, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  const sparse = refuseRelayout.call(this, 'compact');
  const hasParent = this.parentCid !== NO_PARENT;
  return relayout.call(this, sparse, opts, (s, onGrain) => s.compact({ hasParent, signal: opts.signal, onGrain }));
}

/**
 * Defragment (VixDiskLib_Defragment, vmware-vdiskmanager -d): grains in virtual order in each
 * extent file. A hosted split disk's extent lines fix which file holds which virtual range,
 * so no grain can move to another (lower-numbered) extent: each file is put in order alone.
 */
export async function defragmentLink(this: LinkState, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  const sparse = refuseRelayout.call(this, 'defragment');
  return relayout.call(this, sparse, opts, (s, onGrain) => s.defragment({ signal: opts.signal, onGrain }));
}

function refuseRelayout(this: LinkState, what: string): SparseExtent[] {
  if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
  // a bare extent file says nothing of a parent: treating a child's extent as a base would
  // turn its zero grains into "ask the parent"
  if (!this.descriptorWritable) throw new DiskError('NOTSUPPORTED', `${what} needs the disk's descriptor, not a bare extent file`, { path: this.path, field: 'descriptor' });
  if (this.capabilities.compact === 'none') {
    throw new DiskError('NOTSUPPORTED', `${what} needs a hosted sparse VMDK (monolithicSparse, twoGbMaxExtentSparse or a child of one); this disk is ${this.type}`, { path: this.path, field: 'createType', found: this.type });
  }
  return this.writableSparse;
}

async function fileBytes(this: LinkState): Promise<number> {
  let n = 0;
  for (const f of new Set([this.path, ...this.extents.flatMap((e) => (e.path ? [e.path] : []))])) n += (await this.namespace.stat(f)).size;
  return n;
}

async function relayout(this: LinkState, sparse: SparseExtent[], opts: InPlaceOptions, run: (s: SparseExtent, onGrain: () => void) => Promise<number>): Promise<InPlaceResult> {
  const fileBytesBefore = await fileBytes.call(this);
  let total = 0;
  for (const s of sparse) total += await s.dataGrainCount();
  let done = 0;
  let moved = 0;
  opts.onProgress?.(0, total);
  for (const s of sparse) {
    moved += await run(s, () => {
      done++;
      opts.onProgress?.(done, total);
    });
    await s.flush();
  }
  return { fileBytesBefore, fileBytesAfter: await fileBytes.call(this), moved };
}
