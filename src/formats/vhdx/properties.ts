/**
 * VHDX's uniform properties (formats/common/properties.ts): the Virtual Disk ID (uuid), the
 * DataWriteGuid (modification: renewed by every write, so read only) and parent_linkage (the
 * parent's id, read only). No geometry, comment or adapter.
 */
import { tryUuid, type PropertyTable } from '../common/properties.js';

export const VHDX_PROPERTIES: PropertyTable = Object.freeze<PropertyTable>({
  read: (m: (key: string) => string | undefined) => ({ uuid: tryUuid(m('uuid')), modificationUuid: tryUuid(m('dataWriteGuid')), parentUuid: tryUuid(m('parentLinkage')) }),
  settable: ['uuid'],
  whyNot: { modificationUuid: 'the DataWriteGuid is renewed by every write', parentUuid: 'change the parent with rebase' },
  writes: (props, ctx) => (props.uuid !== undefined ? [['uuid', ctx.uuid('uuid')]] : []),
});
