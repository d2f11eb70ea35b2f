/**
 * VHD's uniform properties (formats/common/properties.ts): the footer's unique id, its CHS
 * geometry (PCHS; it may define the size, so the driver refuses a geometry that changes it) and
 * the parent unique id of the dynamic header (read only here: rebase rewrites it together with
 * the parent locators).
 */
import { chsText, tryUuid, type PropertyTable } from '../common/properties.js';

export const VHD_PROPERTIES: PropertyTable = Object.freeze<PropertyTable>({
  read(m: (key: string) => string | undefined) {
    const g = m('geometry')?.split('/').map(Number);
    return {
      uuid: tryUuid(m('uuid')),
      parentUuid: tryUuid(m('parentUuid')),
      pchs: g && g.length === 3 ? { cylinders: g[0]!, heads: g[1]!, sectors: g[2]! } : undefined,
    };
  },
  settable: ['uuid', 'pchs'],
  whyNot: { parentUuid: 'change the parent with rebase (it rewrites the parent locators too)' },
  writes(props, ctx) {
    const w: [string, string][] = [];
    if (props.uuid !== undefined) w.push(['uuid', ctx.uuid('uuid')]);
    if (props.pchs) w.push(['geometry', chsText(ctx.chs('pchs', { cylinders: 65535, heads: 255, sectors: 255 }))]);
    return w;
  },
});
