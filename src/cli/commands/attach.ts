/** `vdkit attach`: a new child of any link of a chain (VixDiskLib_Attach). */
import type { CliCommand } from '../command.js';
import { untrusted } from '../options.js';
import { out } from '../output.js';

export const attach: CliCommand = {
  name: 'attach',
  summary: 'attach a new child to any generation of a chain, even one that already has children (VixDiskLib_Attach)',
  define: (cmd) =>
    cmd
      .option('-t, --type <type>', 'monolithicSparse (default) or twoGbMaxExtentSparse')
      .option('--overwrite', 'replace existing files')
      .addOption(untrusted())
      .argument('<parent>')
      .argument('<child>')
      .action(async (parent: string, child: string, o) => {
        const { createChild } = await import('../../ops/child.js');
        const d = await createChild(parent, child, { type: o.type, overwrite: o.overwrite, untrusted: o.untrusted });
        const info = await d.info();
        await d.close();
        await out(`attached ${d.path} to ${parent} (${info.numLinks} links)\n`);
      }),
};
