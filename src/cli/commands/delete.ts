/** `vdkit delete`: every file of a disk (VixDiskLib_Unlink). */
import type { CliCommand } from '../command.js';
import { out } from '../output.js';

export const deleteCommand: CliCommand = {
  name: 'delete',
  summary: 'delete every file of a disk (VixDiskLib_Unlink); refused when a child depends on it unless --force',
  define: (cmd) =>
    cmd
      .option('--force', 'delete even though children depend on it')
      .argument('<file>')
      .action(async (file: string, o) => {
        const { unlink } = await import('../../ops/rename.js');
        const r = await unlink(file, { force: o.force });
        await out(`removed ${r.removed.join(', ')}\n`);
      }),
};
