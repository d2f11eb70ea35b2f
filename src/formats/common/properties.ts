/**
 * Uniform disk properties (VirtualBox's VDGet/Set{Uuid,ModificationUuid,ParentUuid,
 * ParentModificationUuid,Comment,PCHSGeometry,LCHSGeometry} plus the adapter type), and the
 * table each driver gives to map them onto its own metadata keys. Each driver already writes
 * those keys crash-safely its own way (VMDK descriptor rewrite, VDI header, VHD footer copies
 * with checksums, VHDX metadata through the log); the table only says which keys hold what.
 * The generic get/set over these tables is src/block/properties.ts.
 */
import { randomUUID } from '../../core/platform.js';
import { DiskError } from '../../core/errors.js';
import type { Geometry } from '../types.js';

export interface DiskProperties {
  uuid?: string;
  modificationUuid?: string;
  parentUuid?: string;
  parentModificationUuid?: string;
  comment?: string;
  /** physical CHS geometry (VMDK ddb.geometry.*, VHD footer) */
  pchs?: Geometry;
  /** logical (BIOS) CHS geometry (VMDK ddb.geometry.bios*, VDI v1.1 header) */
  lchs?: Geometry;
  adapterType?: string;
}

export const PROPERTY_NAMES = ['uuid', 'modificationUuid', 'parentUuid', 'parentModificationUuid', 'comment', 'pchs', 'lchs', 'adapterType'] as const;
export type PropertyName = (typeof PROPERTY_NAMES)[number];

/** what a property table is given to read and to validate with */
export interface PropertyContext {
  path: string;
  readMetadata(key: string): string | undefined;
  /** the property as canonical RFC 4122 text ("new" makes one), or INVAL */
  uuid(k: PropertyName): string;
  /** the geometry property, each field checked against `max`, or INVAL */
  chs(k: 'pchs' | 'lchs', max: Geometry): Geometry;
}

/** A driver's mapping of the uniform properties onto its metadata keys. */
export interface PropertyTable {
  /** the properties the format stores (unset ones undefined) */
  read(m: (key: string) => string | undefined): DiskProperties;
  /** the properties `setProperties` can change */
  readonly settable: readonly PropertyName[];
  /** why a stored property cannot be set, where there is a better way */
  readonly whyNot?: Partial<Record<PropertyName, string>>;
  /** the metadata writes for the given (settable) properties, all validated before any is made */
  writes(props: DiskProperties, ctx: PropertyContext): [string, string][];
}

/** qcow2, raw: none of these */
export const NO_PROPERTIES: PropertyTable = Object.freeze<PropertyTable>({ read: () => ({}), settable: [], writes: () => [] });

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** canonical lower-case RFC 4122 text from 32 hex digits (dashes, braces, blanks allowed), or "new" */
export function normalizeUuid(text: string, path: string, field: string): string {
  if (text === 'new') return randomUUID();
  const u = tryUuid(text);
  if (u === undefined) throw new DiskError('INVAL', `bad UUID for ${field}`, { path, field, found: text, expected: 'a UUID (32 hex digits, dashes optional) or "new"' });
  return u;
}

/** canonical text of a stored UUID, undefined when it is none */
export function tryUuid(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const hex = text.replace(/[{}\s-]/g, '').toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) return undefined;
  const u = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  return UUID_RE.test(u) ? u : undefined;
}

/** "C/H/S" */
export function parseGeometry(text: string, path: string, field: string): Geometry {
  const m = /^(\d{1,10})\/(\d{1,10})\/(\d{1,10})$/.exec(text);
  if (!m) throw new DiskError('INVAL', `bad geometry for ${field}`, { path, field, found: text, expected: 'cylinders/heads/sectors' });
  return { cylinders: Number(m[1]), heads: Number(m[2]), sectors: Number(m[3]) };
}

export const chsText = (g: Geometry): string => `${g.cylinders}/${g.heads}/${g.sectors}`;

function num(v: string | undefined): number | undefined {
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

/** a geometry kept as three metadata keys `geometry.<c|h|s>` */
export function keyedGeometry(m: (key: string) => string | undefined, c: string, h: string, s: string): Geometry | undefined {
  const cyl = num(m(`geometry.${c}`));
  const heads = num(m(`geometry.${h}`));
  const sectors = num(m(`geometry.${s}`));
  return cyl === undefined || heads === undefined || sectors === undefined ? undefined : { cylinders: cyl, heads, sectors };
}

/** the three metadata writes of a keyed geometry */
export function geometryWrites(g: Geometry, c: string, h: string, s: string): [string, string][] {
  return [
    [`geometry.${c}`, String(g.cylinders)],
    [`geometry.${h}`, String(g.heads)],
    [`geometry.${s}`, String(g.sectors)],
  ];
}

/** LCHS limits of a BIOS (VMDK ddb.geometry.bios*, VDI v1.1 header) */
export const BIOS_CHS: Geometry = Object.freeze({ cylinders: 1024, heads: 255, sectors: 63 });
