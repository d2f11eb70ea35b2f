/** `vdkit set`: change UUIDs, comment, geometry or adapter type (VDSetUuid, VDSetComment, ...). */
import type { DiskProperties } from '../../ops/properties.js';
import { diskCommand } from '../command.js';
import { UsageError, external, formatOpt, opt, untrusted } from '../options.js';
import { formatProperties, out } from '../output.js';

const setters = () => [
  opt('--uuid <uuid>', 'the image UUID ("new" for a random one)'),
  opt('--modification-uuid <uuid>', 'the modification UUID (VDI, VMDK as VirtualBox writes it)'),
  opt('--parent-uuid <uuid>', 'the parent UUID a child records'),
  opt('--parent-modification-uuid <uuid>', 'the parent\'s modification UUID a child records'),
  opt('--comment <text>', 'the comment (VDI, VMDK as VirtualBox writes it)'),
  opt('--geometry <c/h/s>', 'the physical CHS geometry (VMDK, VHD)'),
  opt('--bios-geometry <c/h/s>', 'the logical (BIOS) CHS geometry (VMDK, VDI)'),
  opt('--adapter <type>', 'the adapter type (VMDK: ide, buslogic, lsilogic, legacyESX, ...)'),
];

export const set = diskCommand({
  name: 'set',
  summary: 'change UUIDs, comment, geometry or adapter type (VDSetUuid, VDSetComment, VDSetPCHSGeometry, ...)',
  options: [formatOpt(), untrusted(), external(), ...setters(), opt('--force', 'change the UUID even though a child depends on this disk')],
  readOnly: false,
  async parse(o, file): Promise<DiskProperties> {
    const { parseGeometry } = await import('../../ops/properties.js');
    const props: DiskProperties = {
      uuid: o.uuid,
      modificationUuid: o.modificationUuid,
      parentUuid: o.parentUuid,
      parentModificationUuid: o.parentModificationUuid,
      comment: o.comment,
      pchs: o.geometry === undefined ? undefined : parseGeometry(o.geometry, file, 'geometry'),
      lchs: o.biosGeometry === undefined ? undefined : parseGeometry(o.biosGeometry, file, 'bios-geometry'),
      adapterType: o.adapter,
    };
    if (Object.values(props).every((v) => v === undefined)) throw new UsageError(`set: give at least one of ${setters().map((s) => s.long).join(', ')}`);
    return props;
  },
  // the open itself is forced: only a new uuid can break a child, and setProperties checks that
  openOptions: () => ({ force: true }),
  async run(d, { o, p: props }) {
    await d.setProperties(props, { force: !!o.force });
    await out(formatProperties(d.getProperties()));
  },
});
