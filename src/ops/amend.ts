/**
 * Amend (qemu-img amend -o KEY=VALUE,...): change an image's creation-time options in place,
 * through the driver's `maintenance().amend` and the keys its `amendOptions` lists. The image
 * is opened alone (a backing file is not touched), with its identity kept: amend changes how
 * the image is stored, never what the disk reads.
 */
import { DiskError } from '../core/errors.js';
import { openLinkIn } from '../disk.js';
import { detectFormatIn, driverByName } from '../formats/registry.js';
import type { CreateOptionInfo, Driver } from '../formats/types.js';
import { hostFiles } from '../storage/file.js';
import { refuseUnsafe, type Namespace } from '../storage/namespace.js';

export interface AmendOptions {
  /** format name; detected when omitted */
  format?: string;
  /** where the image's file is named (default: host files) */
  namespace?: Namespace;
}

/** "compat=0.10,refcount_bits=1" -> { compat: '0.10', refcount_bits: '1' } (qemu's -o syntax, ",," for a comma in a value) */
export function parseAmendList(list: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list.replace(/,,/g, '\0').split(',')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq <= 0) throw new DiskError('INVAL', `amend options are KEY=VALUE (got "${item.replace(/\0/g, ',')}")`, { field: 'options', found: item });
    out[item.slice(0, eq)] = item.slice(eq + 1).replace(/\0/g, ',');
  }
  return out;
}

async function driverFor(path: string, opts: AmendOptions): Promise<Driver> {
  return opts.format ? driverByName(opts.format) : detectFormatIn(opts.namespace ?? hostFiles(), path);
}

/** The amend options the image's format takes (empty: the format offers no amend). */
export async function amendOptionsOf(path: string, opts: AmendOptions = {}): Promise<{ format: string; options: readonly CreateOptionInfo[] }> {
  const d = await driverFor(path, opts);
  return { format: d.name, options: d.amendOptions ?? [] };
}

/** Change the options given; every value is checked before the first write. */
export async function amend(path: string, options: Readonly<Record<string, string>>, opts: AmendOptions = {}): Promise<void> {
  const ns = opts.namespace ?? hostFiles();
  refuseUnsafe(ns, 'amend', path);
  const driver = await driverFor(path, opts);
  if (!driver.amendOptions) throw new DiskError('NOTSUPPORTED', `${driver.name} images have no options to amend`, { path, field: 'format', found: driver.name });
  const image = await openLinkIn(ns, path, { format: driver.name, cowByCaller: true, preserveIdentity: true });
  try {
    const m = image.maintenance();
    if (!m.amend) throw new DiskError('NOTSUPPORTED', `${image.format} ${image.type} images cannot be amended`, { path, field: 'type', found: image.type });
    await m.amend(options);
  } finally {
    await image.close();
  }
}
