/** `vdkit child` (alias redo): a child of a disk (VixDiskLib_CreateChild, the VDDK sample's -redo). */
import type { CliCommand } from '../command.js';
import { untrusted } from '../options.js';
import { out } from '../output.js';

export const child: CliCommand = {
  name: 'child',
  aliases: ['redo'],
  summary: 'create a child (redo log / snapshot delta) of a disk (VixDiskLib_CreateChild, the VDDK sample\'s -redo)',
  define: (cmd) =>
    cmd
      .option('-t, --type <type>', 'monolithicSparse (default) or twoGbMaxExtentSparse')
      .option('--absolute-hint', 'record the parent as an absolute path')
      .option('--overwrite', 'replace existing files')
      .addOption(untrusted())
      .argument('<parent>')
      .argument('[child]', 'default: VMware naming, <parent>-000001.vmdk (the first free number)')
      .action(async (parent: string, child: string | undefined, o) => {
        const { createChild } = await import('../../ops/child.js');
        const d = await createChild(parent, child, { type: o.type, overwrite: o.overwrite, absoluteHint: o.absoluteHint, untrusted: o.untrusted });
        const info = await d.info();
        await d.close();
        await out(`created ${d.path}: child of ${parent} (${info.numLinks} links, parent ${d.format === 'vmdk' ? 'CID' : 'id'} ${d.image.backing()?.parentId ?? '-'})\n`);
      }),
};
