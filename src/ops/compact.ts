/**
 * Compact (VixDiskLib_Shrink, VDCompact, vmware-vdiskmanager -k) and defragment
 * (VixDiskLib_Defragment, vmware-vdiskmanager -d), in place.
 *
 * Design notes
 * - The format work is the driver's `image.maintenance().compact` / `.defragment` (each
 *   format's NOTES.md gives its crash-safe order: data copied and flushed before the table entry that points at
 *   it, old space reused or cut only after that). This module decides whether it may run.
 * - Neither changes what the disk reads as, so the image keeps its identity (VMDK CID) and its
 *   children stay valid: compacting or defragmenting a parent is allowed. The driver keeps a
 *   link with a parent reading zeros where it did (a zero marker, or the zeros stay stored),
 *   never "unallocated", which would show the grandparent.
 * - The link is opened alone (singleLink): nothing is read through the parents.
 * - A format or type without the capability is refused with NOTSUPPORTED naming it, before
 *   anything is opened for writing (streamOptimized cannot even be opened read-write).
 */
import { DiskError } from '../core/errors.js';
import { openLinkIn } from '../disk.js';
import { driverByName, detectFormatIn } from '../formats/registry.js';
import { hostFiles } from '../storage/file.js';
import { refuseUnsafe, type Namespace } from '../storage/namespace.js';
import { throttleCounts } from '../core/progress.js';
import type { Image, InPlaceOptions, InPlaceResult } from '../formats/types.js';

export interface InPlaceOpOptions extends InPlaceOptions {
  /** format name; detected when omitted */
  format?: string;
  /** where the disk's files are named (default: host files); an 'unsafe' cache mode is refused */
  namespace?: Namespace;
}

export async function compact(path: string, opts: InPlaceOpOptions = {}): Promise<InPlaceResult> {
  return inPlace(path, 'compact', opts, (img, o) => img.maintenance().compact!({ signal: o.signal, onProgress: o.onProgress }));
}

export async function defragment(path: string, opts: InPlaceOpOptions = {}): Promise<InPlaceResult> {
  return inPlace(path, 'defragment', opts, (img, o) => img.maintenance().defragment!({ signal: o.signal, onProgress: o.onProgress }));
}

/** the same refusal for every in-place operation: the capability must be native and the method present */
export async function refuseWithout(path: string, cap: 'compact' | 'defragment' | 'discard', format?: string, ns: Namespace = hostFiles()): Promise<string> {
  const driver = format ? driverByName(format) : await detectFormatIn(ns, path);
  const peek = await openLinkIn(ns, path, { format: driver.name, readOnly: true });
  try {
    const method = cap === 'discard' ? peek.discard : peek.maintenance()[cap];
    if (peek.capabilities[cap] === 'none' || !method) {
      const verb = cap === 'compact' ? 'compacted' : cap === 'defragment' ? 'defragmented' : 'discarded';
      throw new DiskError('NOTSUPPORTED', `${peek.format} ${peek.type} images cannot be ${verb}`, { path, field: 'type', found: `${peek.format} ${peek.type}` });
    }
  } finally {
    await peek.close();
  }
  return driver.name;
}

async function inPlace(path: string, cap: 'compact' | 'defragment', opts: InPlaceOpOptions, run: (img: Image, opts: InPlaceOpOptions) => Promise<InPlaceResult>): Promise<InPlaceResult> {
  opts = { ...opts, onProgress: throttleCounts(opts.onProgress) };
  if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path }, { cause: opts.signal.reason });
  const ns = opts.namespace ?? hostFiles();
  refuseUnsafe(ns, cap, path);
  const format = await refuseWithout(path, cap, opts.format, ns);
  const image = await openLinkIn(ns, path, { format, cowByCaller: true, preserveIdentity: true });
  try {
    return await run(image, opts);
  } finally {
    await image.close();
  }
}
