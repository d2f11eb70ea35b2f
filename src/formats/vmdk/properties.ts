/**
 * VMDK's uniform properties (formats/common/properties.ts): uuid ddb.uuid.image (VirtualBox;
 * else VMware's ddb.uuid, kept in step when present), modificationUuid/parentUuid/
 * parentModificationUuid ddb.uuid.modification/.parent/.parentmodification (VirtualBox only:
 * VMware links by CID), comment ddb.comment (VirtualBox, backslash escapes), PCHS
 * ddb.geometry.{cylinders,heads,sectors}, LCHS ddb.geometry.{biosCylinders,biosHeads,
 * biosSectors}, adapter ddb.adapterType.
 */
import { DiskError } from '../../core/errors.js';
import { BIOS_CHS, PROPERTY_NAMES, geometryWrites, keyedGeometry, tryUuid, type PropertyTable } from '../common/properties.js';

/** adapter types VMware products write in ddb.adapterType */
export const VMDK_ADAPTERS = ['ide', 'buslogic', 'lsilogic', 'legacyESX', 'lsisas1068', 'pvscsi', 'sata', 'nvme'] as const;

/** VMware's ddb.uuid layout: "60 00 c2 9a 4c 1f 7e 22-b3 05 d8 6e 91 aa 0c 47" */
function vmwareUuid(u: string): string {
  const bytes = u.replace(/-/g, '').match(/../g)!;
  return `${bytes.slice(0, 8).join(' ')}-${bytes.slice(8).join(' ')}`;
}

const escapeComment = (s: string) => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r');
const unescapeComment = (s: string) => s.replace(/\\(.)/g, (_m, c: string) => (c === 'n' ? '\n' : c === 'r' ? '\r' : c));

export const VMDK_PROPERTIES: PropertyTable = Object.freeze<PropertyTable>({
  read(m: (key: string) => string | undefined) {
    const comment = m('comment');
    return {
      uuid: tryUuid(m('uuid.image')) ?? tryUuid(m('uuid')),
      modificationUuid: tryUuid(m('uuid.modification')),
      parentUuid: tryUuid(m('uuid.parent')),
      parentModificationUuid: tryUuid(m('uuid.parentmodification')),
      comment: comment === undefined ? undefined : unescapeComment(comment),
      pchs: keyedGeometry(m, 'cylinders', 'heads', 'sectors'),
      lchs: keyedGeometry(m, 'biosCylinders', 'biosHeads', 'biosSectors'),
      adapterType: m('adapterType'),
    };
  },
  settable: PROPERTY_NAMES,
  writes(props, ctx) {
    const w: [string, string][] = [];
    if (props.uuid !== undefined) {
      const u = ctx.uuid('uuid');
      w.push(['uuid.image', u]);
      if (ctx.readMetadata('uuid') !== undefined) w.push(['uuid', vmwareUuid(u)]);
    }
    if (props.modificationUuid !== undefined) w.push(['uuid.modification', ctx.uuid('modificationUuid')]);
    if (props.parentUuid !== undefined) w.push(['uuid.parent', ctx.uuid('parentUuid')]);
    if (props.parentModificationUuid !== undefined) w.push(['uuid.parentmodification', ctx.uuid('parentModificationUuid')]);
    if (props.comment !== undefined) {
      // a descriptor value is quoted and VirtualBox has no escape for the quote
      if (props.comment.includes('"')) throw new DiskError('INVAL', 'a VMDK comment cannot hold a double quote', { path: ctx.path, field: 'comment', found: props.comment });
      w.push(['comment', escapeComment(props.comment)]);
    }
    if (props.pchs) w.push(...geometryWrites(ctx.chs('pchs', { cylinders: 16383, heads: 16, sectors: 63 }), 'cylinders', 'heads', 'sectors'));
    if (props.lchs) w.push(...geometryWrites(ctx.chs('lchs', BIOS_CHS), 'biosCylinders', 'biosHeads', 'biosSectors'));
    if (props.adapterType !== undefined) {
      if (!(VMDK_ADAPTERS as readonly string[]).includes(props.adapterType)) {
        throw new DiskError('INVAL', 'unknown adapter type', { path: ctx.path, field: 'adapterType', found: props.adapterType, expected: VMDK_ADAPTERS.join(', ') });
      }
      w.push(['adapterType', props.adapterType]);
    }
    return w;
  },
});

/** qemu-img amend options for VMDK (qemu's create option names): descriptor ddb keys. */
export const VMDK_AMEND_OPTIONS = Object.freeze([
  { name: 'adapter_type', description: 'ddb.adapterType: ide, lsilogic, buslogic, legacyESX, pvscsi (qemu-img create -o adapter_type)' },
  { name: 'hwversion', description: 'ddb.virtualHWVersion: a whole number (qemu-img create -o hwversion)' },
]);

/** The ddb keys and values an amend writes, every value checked first (nothing written on a refusal). */
export function vmdkAmendWrites(path: string, options: Readonly<Record<string, string>>): [string, string][] {
  const w: [string, string][] = [];
  for (const [key, value] of Object.entries(options)) {
    if (key === 'adapter_type') {
      // qemu's list for amend/create: the types a VMDK header's geometry rules know
      const qemu = ['ide', 'lsilogic', 'buslogic', 'legacyESX', 'pvscsi'];
      if (!qemu.includes(value)) throw new DiskError('INVAL', `unknown adapter type "${value}"`, { path, field: 'adapter_type', found: value, expected: qemu.join(', ') });
      w.push(['adapterType', value]);
    } else if (key === 'hwversion') {
      if (!/^[1-9]\d{0,3}$/.test(value)) throw new DiskError('INVAL', 'hwversion is a whole number', { path, field: 'hwversion', found: value, expected: '1..9999' });
      w.push(['virtualHWVersion', value]);
    } else {
      throw new DiskError('INVAL', `vmdk has no amend option "${key}"`, { path, field: 'options', found: key, expected: VMDK_AMEND_OPTIONS.map((o) => o.name).join(', ') });
    }
  }
  return w;
}
