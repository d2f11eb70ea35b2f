/**
 * Get and set the uniform disk properties of an image through its driver's property table
 * (formats/<fmt>/properties.ts): no format is named here. A property the format does not store
 * reads as undefined, and writing it is NOTSUPPORTED, naming the property and the format,
 * before anything is written.
 */
import { DiskError } from '../core/errors.js';
import { PROPERTY_NAMES, normalizeUuid, type DiskProperties, type PropertyName } from '../formats/common/properties.js';
import { driverByName } from '../formats/registry.js';
import type { Geometry, Image } from '../formats/types.js';

export function getProperties(img: Image): DiskProperties {
  const found = driverByName(img.format).properties.read((k) => img.readMetadata(k));
  // every name present (undefined where unset), so JSON output lists them all
  return Object.fromEntries(PROPERTY_NAMES.map((k) => [k, found[k]])) as DiskProperties;
}

/** the properties `setProperties` can change for a format */
export function settableProperties(format: string): readonly PropertyName[] {
  return driverByName(format).properties.settable;
}

/**
 * Write the given properties (all checked first, so an unsupported or bad one changes nothing).
 * The caller has opened the image read-write and refused identity changes a child depends on.
 */
export async function setProperties(img: Image, props: DiskProperties): Promise<void> {
  const path = img.path;
  const table = driverByName(img.format).properties;
  for (const k of PROPERTY_NAMES.filter((n) => props[n] !== undefined)) {
    if (!table.settable.includes(k)) {
      const why = table.whyNot?.[k];
      throw new DiskError('NOTSUPPORTED', `${img.format.toUpperCase()} does not support setting ${k}${why ? `: ${why}` : ''}`, { path, field: k, expected: table.settable.join(', ') || 'nothing' });
    }
  }
  const writes = table.writes(props, {
    path,
    readMetadata: (k) => img.readMetadata(k),
    uuid: (k) => normalizeUuid(props[k] as string, path, k),
    chs: (k, max: Geometry) => {
      const g = props[k]!;
      for (const f of ['cylinders', 'heads', 'sectors'] as const) {
        if (!Number.isInteger(g[f]) || g[f] < 0 || g[f] > max[f]) {
          throw new DiskError('INVAL', `${k} ${f} must be 0..${max[f]}`, { path, field: `${k}.${f}`, found: g[f], expected: `0..${max[f]}` });
        }
      }
      return g;
    },
  });
  for (const [k, v] of writes) await img.writeMetadata(k, v);
}
