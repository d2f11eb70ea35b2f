/** `vdkit snapshot`: list, create, apply, delete internal snapshots (qemu-img snapshot). */
import type { CliCommand } from '../command.js';
import { UsageError, formatOpt } from '../options.js';
import { out } from '../output.js';

export const snapshot: CliCommand = {
  name: 'snapshot',
  summary: 'list (-l), create (-c NAME), apply (-a NAME) or delete (-d NAME) internal snapshots of a qcow2 image (qemu-img snapshot); NAME is an id or a tag',
  define: (cmd) =>
    cmd
      .option('-l, --list', 'list the snapshots (the default)')
      .option('-c, --create <name>', 'take a snapshot of the disk as it is now')
      .option('-a, --apply <name>', 'make the disk\'s content the snapshot\'s again (the snapshot stays)')
      .option('-d, --delete <name>', 'delete the snapshot')
      .addOption(formatOpt())
      .argument('<file>')
      .action(async (file: string, o) => {
        const given = (['list', 'create', 'apply', 'delete'] as const).filter((k) => o[k] !== undefined);
        if (given.length > 1) throw new UsageError(`snapshot: give one of -l, -c, -a, -d (got ${given.map((k) => `--${k}`).join(', ')})`);
        const ops = await import('../../ops/snapshot.js');
        const opts = { format: o.format as string | undefined };
        switch (given[0]) {
          case 'create':
            await ops.createSnapshot(file, o.create, opts);
            return;
          case 'apply':
            await ops.applySnapshot(file, o.apply, opts);
            return;
          case 'delete':
            await ops.deleteSnapshot(file, o.delete, opts);
            return;
          default: {
            const list = await ops.listSnapshots(file, opts);
            // qemu-img prints nothing for an image without snapshots
            if (list.length > 0) await out(ops.formatSnapshotList(list));
          }
        }
      }),
};
