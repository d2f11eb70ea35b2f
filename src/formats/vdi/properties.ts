/**
 * VDI's uniform properties (formats/common/properties.ts): uuidCreate, uuidModify,
 * uuidLinkage, uuidParentModify, szComment and the LCHS geometry of the v1.1 header.
 * VirtualBox never stores the PCHS geometry in a VDI (vdi.md §3.1: the legacy geometry fields
 * are zeros), so it reads as unset and cannot be set.
 */
import { BIOS_CHS, geometryWrites, keyedGeometry, tryUuid, type PropertyTable } from '../common/properties.js';

export const VDI_PROPERTIES: PropertyTable = Object.freeze<PropertyTable>({
  read(m: (key: string) => string | undefined) {
    const lchs = keyedGeometry(m, 'cylinders', 'heads', 'sectors');
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
  },
  settable: ['uuid', 'modificationUuid', 'parentUuid', 'parentModificationUuid', 'comment', 'lchs'],
  writes(props, ctx) {
    const w: [string, string][] = [];
    for (const k of ['uuid', 'modificationUuid', 'parentUuid', 'parentModificationUuid'] as const) if (props[k] !== undefined) w.push([k, ctx.uuid(k)]);
    if (props.comment !== undefined) w.push(['comment', props.comment]);
    if (props.lchs) w.push(...geometryWrites(ctx.chs('lchs', BIOS_CHS), 'cylinders', 'heads', 'sectors'));
    return w;
  },
});
