/** `vdkit rename`: every file of a disk, and its children's parent hints (vmware-vdiskmanager -n). */
import type { CliCommand } from '../command.js';
import { out } from '../output.js';

export const rename: CliCommand = {
  name: 'rename',
  summary: 'rename every file of a disk, rewriting extent names and the parent hints of its children (vmware-vdiskmanager -n)',
  define: (cmd) =>
    cmd
      .argument('<old>')
      .argument('<new>')
      .action(async (from: string, to: string) => {
        const { rename } = await import('../../ops/rename.js');
        const r = await rename(from, to);
        await out(`${from} -> ${to}${r.children.length ? ` (${r.children.length} child${r.children.length > 1 ? 'ren' : ''} re-pointed)` : ''}\n`);
      }),
};
