/**
 * VixDiskLib's disk administration: Create, CreateChild, SpaceNeededForClone, Clone,
 * IsAttachPossible, Attach, Rename, Unlink, Grow, Shrink, Defragment and CheckRepair (what VDDK
 * does to disks as files, as against reading and writing an open one). Re-exported by
 * vixdisklib.ts, the module to import; the design notes there cover these calls too.
 */
import { DiskError } from '../core/errors.js';
import { SECTOR_SIZE } from '../core/ints.js';
import { Disk, openLinkIn } from '../disk.js';
import { hintFor, parentFacts } from '../chain/chain.js';
import type { CheckReport, Image, InPlaceOptions, InPlaceResult } from '../formats/types.js';
import { convert } from '../ops/convert.js';
import { createChild } from '../ops/child.js';
import { measure } from '../ops/measure.js';
import { resize } from '../ops/resize.js';
import { rename, unlink } from '../ops/rename.js';
import { checkDisk } from '../ops/check.js';
import { VIX_OK, vixFail as fail } from './vixdisklib-errors.js';
import { adapterName, call, cancelled, diskTypeOf, handles, liveConnection, liveDisk, localFiles, log, needDiskImage, needInit, openByTransport, sectors, startProgress, writableConnection } from './vixdisklib-state.js';
import {
  VIXDISKLIB_DISK_MONOLITHIC_SPARSE,
  VIXDISKLIB_DISK_SPLIT_SPARSE,
  VIXDISKLIB_DISK_UNKNOWN,
  VIXDISKLIB_FLAG_OPEN_SINGLE_LINK,
  VIXDISKLIB_HWVERSION_WORKSTATION_5,
  type VixDiskLibConnection,
  type VixDiskLibCreateParams,
  type VixDiskLibHandle,
  type VixDiskLibProgressFunc,
} from './vixdisklib-types.js';

// ---------------------------------------------------------------------------------------------
// Creating disks

/** VixDiskLib_Create(connection, path, createParams, progressFunc, progressCallbackData) */
export async function VixDiskLib_Create(
  connection: VixDiskLibConnection,
  path: string,
  createParams: VixDiskLibCreateParams,
  progressFunc?: VixDiskLibProgressFunc | null,
  progressCallbackData?: unknown,
): Promise<number> {
  return call(async () => {
    writableConnection(connection, 'Create', path);
    const { type, thin } = diskTypeOf(createParams.diskType, path);
    if (type === 'streamOptimized') {
      throw fail('NOTSUPPORTED', 'VIX_E_DISK_NOTSUPPORTED', 'streamOptimized disks are made by Clone, not Create (they cannot be written in place)', { path, field: 'diskType' });
    }
    const capacity = sectors(createParams.capacity, 'capacity', path);
    if (capacity === 0) throw fail('INVAL', 'VIX_E_DISK_INVAL', 'capacity must be at least one sector', { path, field: 'capacity', found: 0 });
    const progress = startProgress(progressFunc, progressCallbackData);
    const d = await Disk.create(path, {
      format: 'vmdk',
      type,
      thin,
      capacity: capacity * SECTOR_SIZE,
      adapterType: adapterName(createParams.adapterType, path),
      hwVersion: createParams.hwVersion || VIXDISKLIB_HWVERSION_WORKSTATION_5,
    });
    await d.close();
    progress.report(100);
    return VIX_OK;
  });
}

/** VixDiskLib_CreateChild(diskHandle, childPath, diskType, progressFunc, progressCallbackData) */
export async function VixDiskLib_CreateChild(
  diskHandle: VixDiskLibHandle,
  childPath: string,
  diskType: number,
  progressFunc?: VixDiskLibProgressFunc | null,
  progressCallbackData?: unknown,
): Promise<number> {
  return call(async () => {
    const parent = liveDisk(diskHandle);
    writableConnection(handles.get(diskHandle)!.connection, 'CreateChild', childPath);
    if (diskType !== VIXDISKLIB_DISK_MONOLITHIC_SPARSE && diskType !== VIXDISKLIB_DISK_SPLIT_SPARSE) {
      throw fail('INVAL', 'VIX_E_DISK_INVAL', 'a child is VIXDISKLIB_DISK_MONOLITHIC_SPARSE or VIXDISKLIB_DISK_SPLIT_SPARSE', { path: childPath, field: 'diskType', found: diskType });
    }
    const progress = startProgress(progressFunc, progressCallbackData);
    const child = await createChild(parent.path, childPath, { type: diskTypeOf(diskType, childPath).type });
    await child.close();
    progress.report(100);
    return VIX_OK;
  });
}

// ---------------------------------------------------------------------------------------------
// Cloning

/** VixDiskLib_SpaceNeededForClone(diskHandle, cloneDiskType): bytes (UNKNOWN: the source's type) */
export async function VixDiskLib_SpaceNeededForClone(diskHandle: VixDiskLibHandle, cloneDiskType: number): Promise<number> {
  return call(async () => {
    const disk = liveDisk(diskHandle);
    let format = 'vmdk';
    let type: string;
    let thin: boolean | undefined;
    if (cloneDiskType === VIXDISKLIB_DISK_UNKNOWN) {
      format = disk.format;
      type = disk.type;
    } else {
      ({ type, thin } = diskTypeOf(cloneDiskType, disk.path));
    }
    const adapterType = format === 'vmdk' ? disk.readMetadata('adapterType') : undefined;
    const r = await measure(disk, { format, type, thin, adapterType: adapterType && ADAPTERS_BY_NAME.has(adapterType) ? adapterType : undefined });
    return r.required;
  });
}

const ADAPTERS_BY_NAME = new Set(['ide', 'buslogic', 'lsilogic', 'pvscsi', 'legacyESX']);

/**
 * VixDiskLib_Clone(dstConnection, dstPath, srcConnection, srcPath, createParams, progressFunc,
 * progressCallbackData, overWrite): copy the source chain into a new VMDK of createParams'
 * type, adapter and hardware version. Only the ranges holding data are copied.
 */
export async function VixDiskLib_Clone(
  dstConnection: VixDiskLibConnection,
  dstPath: string,
  srcConnection: VixDiskLibConnection,
  srcPath: string,
  createParams: VixDiskLibCreateParams,
  progressFunc?: VixDiskLibProgressFunc | null,
  progressCallbackData?: unknown,
  overWrite = false,
): Promise<number> {
  return call(async () => {
    writableConnection(dstConnection, 'Clone', dstPath);
    const srcState = liveConnection(srcConnection);
    const { type, thin } = diskTypeOf(createParams.diskType, dstPath);
    const adapterType = adapterName(createParams.adapterType, dstPath);
    const wanted = sectors(createParams.capacity ?? 0, 'capacity', dstPath);
    // a source on a remote connection is an NBD export: the backup path, export -> local VMDK
    const { disk: src } = await openByTransport(srcState, srcPath, { readOnly: true, singleLink: false, raw: false });
    try {
      let capacity = src.capacity;
      if (wanted !== 0) {
        if (wanted * SECTOR_SIZE < src.capacity) {
          throw fail('INVAL', 'VIX_E_DISK_INVAL', `a clone of ${src.sectorCount} sectors cannot hold ${wanted}: it would lose data`, { path: dstPath, field: 'capacity', expected: `>= ${src.sectorCount}`, found: wanted });
        }
        capacity = wanted * SECTOR_SIZE;
      }
      const progress = startProgress(progressFunc, progressCallbackData);
      await convert(src, dstPath, {
        format: 'vmdk',
        type,
        thin,
        adapterType,
        hwVersion: createParams.hwVersion || VIXDISKLIB_HWVERSION_WORKSTATION_5,
        capacity,
        overwrite: overWrite,
        signal: progress.signal,
        onProgress: (p) => progress.report(p.total === 0 ? 100 : (100 * p.done) / p.total),
      });
      cancelled(progress.signal, dstPath);
      progress.report(100);
    } finally {
      await src.close();
    }
    return VIX_OK;
  });
}

// ---------------------------------------------------------------------------------------------
// Chains

/** VixDiskLib_IsAttachPossible(parent, child): resolves VIX_OK or rejects with the reason */
export async function VixDiskLib_IsAttachPossible(parent: VixDiskLibHandle, child: VixDiskLibHandle): Promise<number> {
  return call(async () => {
    attachCheck(parent, child);
    return VIX_OK;
  });
}

function attachCheck(parentHandle: VixDiskLibHandle, childHandle: VixDiskLibHandle): { parent: Disk; child: Disk } {
  const parent = liveDisk(parentHandle);
  const child = liveDisk(childHandle);
  if (parent === child || parent.path === child.path) throw fail('INVAL', 'VIX_E_DISK_INVAL', 'a disk cannot be attached to itself', { path: child.path });
  if (child.readOnly) throw new DiskError('RDONLY', 'the child must be open read-write to record its new parent', { path: child.path });
  if (child.capacity !== parent.capacity) {
    throw fail('INVAL', 'VIX_E_DISK_CAPACITY_MISMATCH', 'the child and the parent differ in capacity', { path: child.path, field: 'capacity', expected: parent.sectorCount, found: child.sectorCount });
  }
  if (child.image.backing()) throw fail('INVALIDCHAIN', 'VIX_E_DISK_INVALIDCHAIN', 'the child already has a parent: attach the root of a chain', { path: child.path, field: 'parentFileNameHint' });
  if (child.format !== parent.format) throw fail('INVALIDCHAIN', 'VIX_E_DISK_INVALIDCHAIN', `a ${child.format} child cannot have a ${parent.format} parent`, { path: child.path, field: 'format' });
  if (!parent.image.identity()) throw fail('INVALIDDISK', 'VIX_E_DISK_INVALIDDISK', 'the parent has no identity a child could record', { path: parent.path, field: 'identity' });
  return { parent, child };
}

/**
 * VixDiskLib_Attach(parent, child): make `child` (a disk without a parent, typically new from
 * Create) a redo log of `parent`. The parent handle is closed; the child handle now reads
 * through the combined chain.
 */
export async function VixDiskLib_Attach(parentHandle: VixDiskLibHandle, childHandle: VixDiskLibHandle): Promise<number> {
  return call(async () => {
    const { parent, child } = attachCheck(parentHandle, childHandle);
    const parentId = parent.image.identity()!;
    const parentPath = parent.path;
    const childPath = child.path;
    const ns = child.namespace;
    const change = { hint: hintFor(ns, childPath, parentPath), parentId, parentName: ns.absolute(parentPath), parent: parentFacts(parent.image) };
    const childState = handles.get(childHandle)!;
    const parentState = handles.get(parentHandle)!;
    childState.disk = undefined;
    await child.close();
    const link: Image = await openLinkIn(ns, childPath, { cowByCaller: true });
    try {
      await link.setBacking(change);
    } finally {
      await link.close();
    }
    parentState.disk = undefined;
    await parent.close();
    childState.disk = await Disk.open(childPath, { namespace: ns, readOnly: false, singleLink: (childHandle.flags & VIXDISKLIB_FLAG_OPEN_SINGLE_LINK) !== 0 });
    return VIX_OK;
  });
}

// ---------------------------------------------------------------------------------------------
// Administrative operations

/** VixDiskLib_Rename(srcFileName, dstFileName): every file of the disk, children re-pointed */
export async function VixDiskLib_Rename(srcFileName: string, dstFileName: string): Promise<number> {
  return call(async () => {
    needInit();
    await needDiskImage(srcFileName);
    await rename(srcFileName, dstFileName);
    return VIX_OK;
  });
}

/** VixDiskLib_Unlink(connection, path): delete every file of the disk (its children are orphaned) */
export async function VixDiskLib_Unlink(connection: VixDiskLibConnection, path: string): Promise<number> {
  return call(async () => {
    writableConnection(connection, 'Unlink', path);
    await needDiskImage(path);
    await unlink(path, { force: true });
    return VIX_OK;
  });
}

/**
 * VixDiskLib_Grow(connection, path, capacity, updateGeometry, progressFunc, progressCallbackData):
 * the disk (not open) grows to `capacity` sectors. Without updateGeometry the recorded
 * geometry is kept as it was.
 */
export async function VixDiskLib_Grow(
  connection: VixDiskLibConnection,
  path: string,
  capacity: number,
  updateGeometry: boolean,
  progressFunc?: VixDiskLibProgressFunc | null,
  progressCallbackData?: unknown,
): Promise<number> {
  return call(async () => {
    writableConnection(connection, 'Grow', path);
    sectors(capacity, 'capacity', path);
    await needDiskImage(path);
    const progress = startProgress(progressFunc, progressCallbackData);
    const keys = ['geometry.cylinders', 'geometry.heads', 'geometry.sectors'];
    let kept: [string, string][] = [];
    const before = await Disk.open(path, { readOnly: true, singleLink: true });
    try {
      if (capacity * SECTOR_SIZE < before.capacity) {
        throw fail('INVAL', 'VIX_E_DISK_INVAL', `Grow cannot make a disk of ${before.sectorCount} sectors smaller (${capacity})`, { path, field: 'capacity', expected: `>= ${before.sectorCount}`, found: capacity });
      }
      if (!updateGeometry && before.format === 'vmdk') kept = keys.flatMap((k) => (before.readMetadata(k) === undefined ? [] : [[k, before.readMetadata(k)!] as [string, string]]));
    } finally {
      await before.close();
    }
    await resize(path, capacity * SECTOR_SIZE);
    if (kept.length > 0) {
      const d = await Disk.open(path, { singleLink: true, cowByCaller: true, preserveIdentity: true, force: true });
      try {
        for (const [k, v] of kept) if (d.readMetadata(k) !== v) await d.writeMetadata(k, v);
      } finally {
        await d.close();
      }
    }
    progress.report(100);
    return VIX_OK;
  });
}

/** the in-place operation of an open image, or VIX_E_DISK_NOTSUPPORTED */
async function inPlace(
  diskHandle: VixDiskLibHandle,
  what: 'compact' | 'defragment',
  progressFunc: VixDiskLibProgressFunc | null | undefined,
  progressCallbackData: unknown,
): Promise<InPlaceResult> {
  const disk = liveDisk(diskHandle);
  if (disk.readOnly) throw new DiskError('RDONLY', `${what === 'compact' ? 'Shrink' : 'Defragment'} rewrites the disk: open it without VIXDISKLIB_FLAG_OPEN_READ_ONLY`, { path: disk.path });
  const image = disk.image;
  if (what === 'compact' && image.backing() && (diskHandle.flags & VIXDISKLIB_FLAG_OPEN_SINGLE_LINK) === 0) {
    throw fail('CANTSHRINK', 'VIX_E_DISK_CANTSHRINK', 'this disk is a redo log opened with its parents: open it with VIXDISKLIB_FLAG_OPEN_SINGLE_LINK, or shrink the parent', { path: disk.path });
  }
  const m = image.maintenance();
  const run = what === 'compact' ? m.compact : m.defragment;
  if ((image.capabilities[what] === 'none' || !run) && isFlat(image)) {
    // the guide: effective with sparse disks, "might not do anything with FLAT type. In either case, the function returns VIX_OK"
    const progress = startProgress(progressFunc, progressCallbackData);
    const { fileSize } = await disk.info();
    log(`VixDiskLib: ${disk.path}: ${what === 'compact' ? 'Shrink' : 'Defragment'} has nothing to do on a ${image.type} disk`);
    progress.report(100);
    return { fileBytesBefore: fileSize, fileBytesAfter: fileSize };
  }
  if (image.capabilities[what] === 'none' || !run) {
    throw fail('NOTSUPPORTED', 'VIX_E_DISK_NOTSUPPORTED', `${image.format} ${image.type} disks cannot be ${what === 'compact' ? 'shrunk' : 'defragmented'} yet`, { path: disk.path, field: 'type', found: image.type });
  }
  const progress = startProgress(progressFunc, progressCallbackData);
  // startProgress passes each whole per cent once: that is this progress function's thinning
  const opts: InPlaceOptions = { signal: progress.signal, onProgress: (done, total) => progress.report(total === 0 ? 100 : (100 * done) / total) };
  await disk.flush();
  let result: InPlaceResult;
  try {
    // alone on the handle: Read/Write calls made meanwhile wait for it (they would race the moves)
    result = await disk.runExclusive(() => run.call(m, opts));
  } catch (err) {
    // however the driver reports being stopped, a stop asked for by the progress function is a cancel
    cancelled(progress.signal, disk.path);
    throw err;
  }
  cancelled(progress.signal, disk.path);
  progress.report(100);
  return result;
}

/** preallocated disks: every sector has its place in the file, nothing to reclaim or move */
function isFlat(image: Image): boolean {
  if (image.format === 'raw') return true;
  // VHD and VHDX fixed, VDI static (its type is 'fixed' too): every block is allocated when made
  if (image.format === 'vhd' || image.format === 'vhdx' || image.format === 'vdi') return image.type === 'fixed';
  return image.format === 'vmdk' && /flat|^vmfs$|preallocated|thick/i.test(image.type);
}

/** VixDiskLib_Shrink(diskHandle, progressFunc, progressCallbackData): give back zeroed space */
export async function VixDiskLib_Shrink(diskHandle: VixDiskLibHandle, progressFunc?: VixDiskLibProgressFunc | null, progressCallbackData?: unknown): Promise<InPlaceResult> {
  return call(() => inPlace(diskHandle, 'compact', progressFunc, progressCallbackData));
}

/** VixDiskLib_Defragment(diskHandle, progressFunc, progressCallbackData) */
export async function VixDiskLib_Defragment(diskHandle: VixDiskLibHandle, progressFunc?: VixDiskLibProgressFunc | null, progressCallbackData?: unknown): Promise<InPlaceResult> {
  return call(() => inPlace(diskHandle, 'defragment', progressFunc, progressCallbackData));
}

/**
 * VixDiskLib_CheckRepair(connection, filename, repair): resolves when the check ran (whatever it
 * found), with its report; with `repair` what can be fixed is fixed.
 */
export async function VixDiskLib_CheckRepair(connection: VixDiskLibConnection, filename: string, repair: boolean): Promise<CheckReport> {
  return call(async () => {
    if (repair) writableConnection(connection, 'CheckRepair with repair', filename);
    else localFiles(liveConnection(connection), 'CheckRepair', filename);
    await needDiskImage(filename);
    return checkDisk(filename, { repair: !!repair });
  });
}
