/**
 * Persistent dirty bitmaps (qemu-img bitmap --add/--remove/--clear/--enable/--disable/--merge)
 * of one image file, through the driver's `maintenance().bitmaps` (qcow2); other formats are
 * refused with NOTSUPPORTED naming them. The image is opened alone (its backing file is not
 * touched: bitmaps belong to this file). Actions run in the order given, as qemu-img runs them.
 */
import { DiskError } from '../core/errors.js';
import { openLinkIn } from '../disk.js';
import { detectFormatIn, driverByName } from '../formats/registry.js';
import type { ByteRange, Image, PersistentBitmapInfo, PersistentBitmaps } from '../formats/types.js';
import { hostFiles } from '../storage/file.js';
import { refuseUnsafe, type Namespace } from '../storage/namespace.js';

export interface BitmapOptions {
  /** format name; detected when omitted */
  format?: string;
  /** where the image's file is named (default: host files) */
  namespace?: Namespace;
}

export type BitmapAction =
  | { op: 'add'; granularity?: number; disabled?: boolean }
  | { op: 'remove' }
  | { op: 'clear' }
  | { op: 'enable' }
  | { op: 'disable' }
  /** set what bitmap `source` marks; of `sourceImage` (any image with bitmaps) when given, else of this image */
  | { op: 'merge'; source: string; sourceImage?: string; sourceFormat?: string };

/** The image's bitmaps ops, opened alone; refused for formats without bitmaps. */
export async function withBitmaps<T>(path: string, opts: BitmapOptions, readOnly: boolean, fn: (b: PersistentBitmaps, image: Image) => Promise<T>): Promise<T> {
  const ns = opts.namespace ?? hostFiles();
  if (!readOnly) refuseUnsafe(ns, 'bitmap', path);
  const driver = opts.format ? driverByName(opts.format) : await detectFormatIn(ns, path);
  const image = await openLinkIn(ns, path, { format: driver.name, readOnly, cowByCaller: true, preserveIdentity: true });
  try {
    const b = image.maintenance().bitmaps;
    if (!b) throw new DiskError('NOTSUPPORTED', `${image.format} images have no persistent bitmaps (qcow2 has them)`, { path, field: 'format', found: image.format });
    return await fn(b, image);
  } finally {
    await image.close();
  }
}

/** The bitmaps of `path`, in directory order. */
export function listBitmaps(path: string, opts: BitmapOptions = {}): Promise<PersistentBitmapInfo[]> {
  return withBitmaps(path, opts, true, async (b) => b.list());
}

/** The byte ranges bitmap `name` of `path` marks. */
export function bitmapRanges(path: string, name: string, opts: BitmapOptions = {}): Promise<ByteRange[]> {
  return withBitmaps(path, opts, true, (b) => b.dirty(name));
}

/** Run `actions` on bitmap `name` of `path`, in order. */
export async function bitmap(path: string, name: string, actions: readonly BitmapAction[], opts: BitmapOptions = {}): Promise<void> {
  if (actions.length === 0) throw new DiskError('INVAL', 'no bitmap action given', { path, field: 'action', expected: 'add, remove, clear, enable, disable or merge' });
  // a merge from another image reads that image first (read-only), before this one is opened for writing
  const sources = new Map<BitmapAction, ByteRange[]>();
  for (const a of actions) if (a.op === 'merge' && a.sourceImage !== undefined) sources.set(a, await bitmapRanges(a.sourceImage, a.source, { format: a.sourceFormat, namespace: opts.namespace }));
  await withBitmaps(path, opts, false, async (b) => {
    for (const a of actions) {
      switch (a.op) {
        case 'add':
          await b.add(name, { granularity: a.granularity, disabled: a.disabled });
          break;
        case 'remove':
          await b.remove(name);
          break;
        case 'clear':
          await b.clear(name);
          break;
        case 'enable':
          await b.enable(name);
          break;
        case 'disable':
          await b.disable(name);
          break;
        case 'merge':
          await b.merge(name, sources.get(a) ?? (await b.dirty(a.source)));
          break;
      }
    }
  });
}
