/**
 * Uniform disk properties: VirtualBox's VDGet/Set{Uuid,ModificationUuid,ParentUuid,
 * ParentModificationUuid,Comment,PCHSGeometry,LCHSGeometry} plus the adapter type, over every
 * format, built on the drivers' metadata keys (each driver already writes those crash-safely
 * its own way: VMDK descriptor rewrite, VDI header, VHD footer copies with checksums, VHDX
 * metadata through the log).
 *
 * Design notes:
 * - Where a format stores a property (vmdk.md, vdi.md, vhd.md, vhdx.md):
 *   VMDK  uuid ddb.uuid.image (VirtualBox; else VMware's ddb.uuid, which is kept in step when
 *         present), modificationUuid/parentUuid/parentModificationUuid ddb.uuid.modification/
 *         .parent/.parentmodification (VirtualBox only: VMware links by CID), comment ddb.comment
 *         (VirtualBox, backslash escapes), PCHS ddb.geometry.{cylinders,heads,sectors}, LCHS
 *         ddb.geometry.{biosCylinders,biosHeads,biosSectors}, adapter ddb.adapterType.
 *   VDI   uuidCreate, uuidModify, uuidLinkage, uuidParentModify, szComment, LCHS in the v1.1
 *         header. VirtualBox never stores the PCHS geometry in a VDI (vdi.md §3.1: the legacy
 *         geometry fields are zeros), so it reads as unset and cannot be set.
 *   VHD   footer unique id, CHS geometry (PCHS; it may define the size, so the driver refuses
 *         a geometry that changes it), parent unique id in the dynamic header (read only here:
 *         rebase rewrites it together with the parent locators).
 *   VHDX  Virtual Disk ID (uuid), DataWriteGuid (modification: renewed by every write, so read
 *         only), parent_linkage (parent uuid, read only). No geometry, comment or adapter.
 *   qcow2, raw: none of these.
 * - A property the format does not store reads as undefined and writing it is NOTSUPPORTED,
 *   naming the property and the format, before anything is written.
 */
import { randomUUID } from '../core/platform.js';
import { DiskError } from '../core/errors.js';
import type { Geometry, Image } from '../formats/types.js';

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

/** adapter types VMware products write in ddb.adapterType */
export const VMDK_ADAPTERS = ['ide', 'buslogic', 'lsilogic', 'legacyESX', 'lsisas1068', 'pvscsi', 'sata', 'nvme'] as const;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** canonical lower-case RFC 4122 text from 32 hex digits (dashes, braces, blanks allowed), or "new" */
export function normalizeUuid(text: string, path: string, field: string): string {
  if (text === 'new') return randomUUID();
  const hex = text.replace(/[{}\s-]/g, '').toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new DiskError('INVAL', `bad UUID for ${field}`, { path, field, found: text, expected: 'a UUID (32 hex digits, dashes optional) or "new"' });
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** "C/H/S" */
export function parseGeometry(text: string, path: string, field: string): Geometry {
  const m = /^(\d{1,10})\/(\d{1,10})\/(\d{1,10})$/.exec(text);
  if (!m) throw new DiskError('INVAL', `bad geometry for ${field}`, { path, field, found: text, expected: 'cylinders/heads/sectors' });
  return { cylinders: Number(m[1]), heads: Number(m[2]), sectors: Number(m[3]) };
}

const chsText = (g: Geometry) => `${g.cylinders}/${g.heads}/${g.sectors}`;

function tryUuid(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const hex = text.replace(/[{}\s-]/g, '').toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) return undefined;
  const u = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  return UUID_RE.test(u) ? u : undefined;
}

/** VMware's ddb.uuid layout: "60 00 c2 9a 4c 1f 7e 22-b3 05 d8 6e 91 aa 0c 47" */
function vmwareUuid(u: string): string {
  const hex = u.replace(/-/g, '');
  const bytes = hex.match(/../g)!;
  return `${bytes.slice(0, 8).join(' ')}-${bytes.slice(8).join(' ')}`;
}

function escapeComment(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r');
}
function unescapeComment(s: string): string {
  return s.replace(/\\(.)/g, (_m, c: string) => (c === 'n' ? '\n' : c === 'r' ? '\r' : c));
}

function num(v: string | undefined): number | undefined {
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

function ddbGeometry(img: Image, c: string, h: string, s: string): Geometry | undefined {
  const cyl = num(img.readMetadata(`geometry.${c}`));
  const heads = num(img.readMetadata(`geometry.${h}`));
  const sectors = num(img.readMetadata(`geometry.${s}`));
  return cyl === undefined || heads === undefined || sectors === undefined ? undefined : { cylinders: cyl, heads, sectors };
}

export function getProperties(img: Image): DiskProperties {
  const found = readProperties(img);
  // every name present (undefined where unset), so JSON output lists them all
  return Object.fromEntries(PROPERTY_NAMES.map((k) => [k, found[k]])) as DiskProperties;
}

function readProperties(img: Image): DiskProperties {
  const m = (k: string) => img.readMetadata(k);
  switch (img.format) {
    case 'vmdk': {
      const comment = m('comment');
      return {
        uuid: tryUuid(m('uuid.image')) ?? tryUuid(m('uuid')),
        modificationUuid: tryUuid(m('uuid.modification')),
        parentUuid: tryUuid(m('uuid.parent')),
        parentModificationUuid: tryUuid(m('uuid.parentmodification')),
        comment: comment === undefined ? undefined : unescapeComment(comment),
        pchs: ddbGeometry(img, 'cylinders', 'heads', 'sectors'),
        lchs: ddbGeometry(img, 'biosCylinders', 'biosHeads', 'biosSectors'),
        adapterType: m('adapterType'),
      };
    }
    case 'vdi': {
      const lchs = ddbGeometry(img, 'cylinders', 'heads', 'sectors');
      const comment = m('comment');
      return {
        uuid: tryUuid(m('uuid')),
        modificationUuid: tryUuid(m('modificationUuid')),
        parentUuid: tryUuid(m('parentUuid')),
        parentModificationUuid: tryUuid(m('parentModificationUuid')),
        comment: comment === '' ? undefined : comment,
        // 0/0/0 is VirtualBox's "not set"
        lchs: lchs && lchs.cylinders + lchs.heads + lchs.sectors > 0 ? lchs : undefined,
      };
    }
    case 'vhd': {
      const g = m('geometry')?.split('/').map(Number);
      return {
        uuid: tryUuid(m('uuid')),
        parentUuid: tryUuid(m('parentUuid')),
        pchs: g && g.length === 3 ? { cylinders: g[0]!, heads: g[1]!, sectors: g[2]! } : undefined,
      };
    }
    case 'vhdx':
      return { uuid: tryUuid(m('uuid')), modificationUuid: tryUuid(m('dataWriteGuid')), parentUuid: tryUuid(m('parentLinkage')) };
    default:
      return {};
  }
}

/** the properties `setProperties` can change for a format */
export function settableProperties(format: string): readonly PropertyName[] {
  switch (format) {
    case 'vmdk':
      return PROPERTY_NAMES;
    case 'vdi':
      return ['uuid', 'modificationUuid', 'parentUuid', 'parentModificationUuid', 'comment', 'lchs'];
    case 'vhd':
      return ['uuid', 'pchs'];
    case 'vhdx':
      return ['uuid'];
    default:
      return [];
  }
}

const WHY_NOT: Record<string, Partial<Record<PropertyName, string>>> = {
  vhd: { parentUuid: 'change the parent with rebase (it rewrites the parent locators too)' },
  vhdx: { modificationUuid: 'the DataWriteGuid is renewed by every write', parentUuid: 'change the parent with rebase' },
};

/**
 * Write the given properties (all checked first, so an unsupported or bad one changes nothing).
 * The caller has opened the image read-write and refused identity changes a child depends on.
 */
export async function setProperties(img: Image, props: DiskProperties): Promise<void> {
  const path = img.path;
  const can = settableProperties(img.format);
  const given = PROPERTY_NAMES.filter((k) => props[k] !== undefined);
  for (const k of given) {
    if (!can.includes(k)) {
      const why = WHY_NOT[img.format]?.[k];
      throw new DiskError('NOTSUPPORTED', `${img.format.toUpperCase()} does not support setting ${k}${why ? `: ${why}` : ''}`, { path, field: k, expected: can.join(', ') || 'nothing' });
    }
  }
  // validate into the metadata writes, then apply them
  const writes: [string, string][] = [];
  const uuid = (k: PropertyName) => normalizeUuid(props[k] as string, path, k);
  const chs = (k: 'pchs' | 'lchs', max: Geometry) => {
    const g = props[k]!;
    for (const f of ['cylinders', 'heads', 'sectors'] as const) {
      if (!Number.isInteger(g[f]) || g[f] < 0 || g[f] > max[f]) {
        throw new DiskError('INVAL', `${k} ${f} must be 0..${max[f]}`, { path, field: `${k}.${f}`, found: g[f], expected: `0..${max[f]}` });
      }
    }
    return g;
  };
  switch (img.format) {
    case 'vmdk': {
      if (props.uuid !== undefined) {
        const u = uuid('uuid');
        writes.push(['uuid.image', u]);
        if (img.readMetadata('uuid') !== undefined) writes.push(['uuid', vmwareUuid(u)]);
      }
      if (props.modificationUuid !== undefined) writes.push(['uuid.modification', uuid('modificationUuid')]);
      if (props.parentUuid !== undefined) writes.push(['uuid.parent', uuid('parentUuid')]);
      if (props.parentModificationUuid !== undefined) writes.push(['uuid.parentmodification', uuid('parentModificationUuid')]);
      if (props.comment !== undefined) {
        // a descriptor value is quoted and VirtualBox has no escape for the quote
        if (props.comment.includes('"')) throw new DiskError('INVAL', 'a VMDK comment cannot hold a double quote', { path, field: 'comment', found: props.comment });
        writes.push(['comment', escapeComment(props.comment)]);
      }
      if (props.pchs) {
        const g = chs('pchs', { cylinders: 16383, heads: 16, sectors: 63 });
        writes.push(['geometry.cylinders', String(g.cylinders)], ['geometry.heads', String(g.heads)], ['geometry.sectors', String(g.sectors)]);
      }
      if (props.lchs) {
        const g = chs('lchs', { cylinders: 1024, heads: 255, sectors: 63 });
        writes.push(['geometry.biosCylinders', String(g.cylinders)], ['geometry.biosHeads', String(g.heads)], ['geometry.biosSectors', String(g.sectors)]);
      }
      if (props.adapterType !== undefined) {
        if (!(VMDK_ADAPTERS as readonly string[]).includes(props.adapterType)) {
          throw new DiskError('INVAL', 'unknown adapter type', { path, field: 'adapterType', found: props.adapterType, expected: VMDK_ADAPTERS.join(', ') });
        }
        writes.push(['adapterType', props.adapterType]);
      }
      break;
    }
    case 'vdi': {
      if (props.uuid !== undefined) writes.push(['uuid', uuid('uuid')]);
      if (props.modificationUuid !== undefined) writes.push(['modificationUuid', uuid('modificationUuid')]);
      if (props.parentUuid !== undefined) writes.push(['parentUuid', uuid('parentUuid')]);
      if (props.parentModificationUuid !== undefined) writes.push(['parentModificationUuid', uuid('parentModificationUuid')]);
      if (props.comment !== undefined) writes.push(['comment', props.comment]);
      if (props.lchs) {
        const g = chs('lchs', { cylinders: 1024, heads: 255, sectors: 63 });
        writes.push(['geometry.cylinders', String(g.cylinders)], ['geometry.heads', String(g.heads)], ['geometry.sectors', String(g.sectors)]);
      }
      break;
    }
    case 'vhd':
      if (props.uuid !== undefined) writes.push(['uuid', uuid('uuid')]);
      if (props.pchs) writes.push(['geometry', chsText(chs('pchs', { cylinders: 65535, heads: 255, sectors: 255 }))]);
      break;
    case 'vhdx':
      if (props.uuid !== undefined) writes.push(['uuid', uuid('uuid')]);
      break;
  }
  for (const [k, v] of writes) await img.writeMetadata(k, v);
}
