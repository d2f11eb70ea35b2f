/**
 * Resize (VixDiskLib_Grow, VDResize, vmware-vdiskmanager -x, qemu-img resize).
 *
 * Design notes
 * - The format work is the driver's `image.maintenance().resize` (each format's NOTES.md gives its crash-safe
 *   order: what makes the new size visible is always the last, single write, so a killed resize
 *   leaves the old or the new disk). This module decides whether a resize may happen at all.
 * - Growing: the new range reads as zeros (or as the parent, for a child that stays within its
 *   parent). A child of a format whose children must keep their parent's size (VMDK) is not
 *   grown, and neither is a parent such a child depends on.
 * - Shrinking: only with `shrink`, only where the format can, never on a disk that has children
 *   (they would read past their parent's end), and only when the cut-off part holds no data
 *   (no stored range reading other than zeros) unless `force`.
 */
import { DiskError } from '../core/errors.js';
import { findChildren } from '../chain/children.js';
import { chainFormats, openLinkIn } from '../disk.js';
import { backends, driverByName, detectFormatIn } from '../formats/registry.js';
import { hostFiles } from '../storage/file.js';
import { refuseUnsafe, type Namespace } from '../storage/namespace.js';
import type { Image } from '../formats/types.js';

export interface ResizeOptions {
  /** allow a smaller size */
  shrink?: boolean;
  /** shrink even when the cut-off part holds data */
  force?: boolean;
  /** format name; detected when omitted */
  format?: string;
  /** where the disk's files are named (default: host files); an 'unsafe' cache mode is refused */
  namespace?: Namespace;
}

export interface ResizeResult {
  oldCapacity: number;
  newCapacity: number;
}

/** `size` is the new capacity in bytes, or a change of it with `relative` (+/-) */
export async function resize(path: string, size: number, opts: ResizeOptions & { relative?: boolean } = {}): Promise<ResizeResult> {
  const ns = opts.namespace ?? hostFiles();
  refuseUnsafe(ns, 'resize', path);
  const driver = opts.format ? driverByName(opts.format) : await detectFormatIn(ns, path);
  // a look first, read-only: some types (streamOptimized) cannot even be opened for writing
  const peek = await openLinkIn(ns, path, { format: driver.name, readOnly: true });
  const peekType = peek.type;
  await peek.close();
  if (driver.sequentialTypes.includes(peekType)) {
    throw new DiskError('NOTSUPPORTED', 'streamOptimized disks cannot be resized in place: convert to monolithicSparse, resize, and convert back', { path, field: 'createType', found: peekType });
  }
  const image = await openLinkIn(ns, path, { format: driver.name, cowByCaller: true, preserveIdentity: true });
  let closed = false;
  try {
    const old = image.capacity;
    const next = opts.relative ? old + size : size;
    if (!Number.isSafeInteger(next) || next < 0) throw new DiskError('INVAL', 'the new size must be a whole number of bytes, not negative', { path, field: 'size', found: next });
    if (next % driver.alignment !== 0) throw new DiskError('INVAL', `the new size must be a multiple of ${driver.alignment} bytes`, { path, field: 'size', found: next });
    if (next === old) return { oldCapacity: old, newCapacity: next };
    const caps = image.capabilities;
    const m = image.maintenance();
    if (caps.resize === 'none' || !m.resize) throw new DiskError('NOTSUPPORTED', `${image.format} ${image.type} images cannot be resized`, { path, field: 'type', found: image.type });
    if (next < old) await checkShrink(image, next, opts);
    else await checkGrow(image);
    closed = true;
    await m.resize(next);
    return { oldCapacity: old, newCapacity: next };
  } finally {
    if (!closed) await image.close().catch(() => {});
  }
}

async function children(image: Image): Promise<string[]> {
  return findChildren(image, chainFormats, backends().flatMap((b) => b.extensions));
}

async function checkGrow(image: Image): Promise<void> {
  const caps = image.capabilities;
  if (image.backing() && caps.differencingSameSize) {
    throw new DiskError('NOTSUPPORTED', `a ${image.format} child must keep its parent's size: resize the base and create the child again`, { path: image.path, field: 'capacity', found: image.capacity });
  }
  for (const c of await children(image)) {
    const childFormat = (await detectFormatIn(image.namespace, c)).name;
    if (driverByName(childFormat).capabilities.differencingSameSize) {
      throw new DiskError('NOTSUPPORTED', `${c} is a child of this disk and must keep its parent's size: growing would break it`, { path: image.path, field: 'children', found: c });
    }
  }
}

async function checkShrink(image: Image, next: number, opts: ResizeOptions): Promise<void> {
  const where = { path: image.path, field: 'size', expected: `>= ${image.capacity}`, found: next };
  if (!opts.shrink) throw new DiskError('CANTSHRINK', 'the new size is smaller: pass --shrink (shrink) to cut the disk', where);
  if (image.capabilities.resize !== 'grow-shrink') throw new DiskError('CANTSHRINK', `${image.format} images can only grow`, where);
  const kids = await children(image);
  if (kids.length > 0) throw new DiskError('CANTSHRINK', `${kids[0]} is a child of this disk: shrinking would cut what it reads`, { path: image.path, field: 'children', found: kids });
  if (opts.force) return;
  const chunk = Buffer.alloc(1024 * 1024);
  for (const r of await image.blockStatus(next, image.capacity - next)) {
    if (r.state !== 'data') continue;
    for (let at = r.offset; at < r.offset + r.length; at += chunk.length) {
      const part = chunk.subarray(0, Math.min(chunk.length, r.offset + r.length - at));
      await image.read(part, at);
      if (part.some((b) => b !== 0)) {
        throw new DiskError('CANTSHRINK', 'the part to cut off holds data: pass --force (force) to shrink anyway', { path: image.path, field: 'size', offset: at, found: next });
      }
    }
  }
}
