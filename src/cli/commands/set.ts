/** `vdkit set`: change UUIDs, comment, geometry or adapter type (VDSetUuid, VDSetComment, ...). */
import type { DiskProperties } from '../../ops/properties.js';
import { withDisk, type CliCommand } from '../command.js';
import { UsageError, external, formatOpt, openOpts, untrusted, withOptions } from '../options.js';
import { formatProperties, out } from '../output.js';

export const set: CliCommand = {
  name: 'set',
  summary: 'change UUIDs, comment, geometry or adapter type (VDSetUuid, VDSetComment, VDSetPCHSGeometry, ...)',
  define: (cmd) =>
    withOptions(cmd, [formatOpt(), untrusted(), external()])
      .option('--uuid <uuid>', 'the image UUID ("new" for a random one)')
      .option('--modification-uuid <uuid>', 'the modification UUID (VDI, VMDK as VirtualBox writes it)')
      .option('--parent-uuid <uuid>', 'the parent UUID a child records')
      .option('--parent-modification-uuid <uuid>', 'the parent\'s modification UUID a child records')
      .option('--comment <text>', 'the comment (VDI, VMDK as VirtualBox writes it)')
      .option('--geometry <c/h/s>', 'the physical CHS geometry (VMDK, VHD)')
      .option('--bios-geometry <c/h/s>', 'the logical (BIOS) CHS geometry (VMDK, VDI)')
      .option('--adapter <type>', 'the adapter type (VMDK: ide, buslogic, lsilogic, legacyESX, ...)')
      .option('--force', 'change the UUID even though a child depends on this disk')
      .argument('<file>')
      .action(async (file: string, o) => {
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
        if (Object.values(props).every((v) => v === undefined)) throw new UsageError('set: give at least one of --uuid, --modification-uuid, --parent-uuid, --parent-modification-uuid, --comment, --geometry, --bios-geometry, --adapter');
        // the open itself is forced: only a new uuid can break a child, and setProperties checks that
        await withDisk(file, { readOnly: false, ...openOpts(o), force: true }, async (d) => {
          await d.setProperties(props, { force: !!o.force });
          await out(formatProperties(d.getProperties()));
        });
      }),
};
