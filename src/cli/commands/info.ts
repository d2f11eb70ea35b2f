/** `vdkit info`: what a disk is (VixDiskLib_GetInfo, qemu-img info). */
import { withDisk, type CliCommand } from '../command.js';
import { openOpts, readingOptions, withOptions } from '../options.js';
import { formatInfo, formatProperties, out } from '../output.js';

export const info: CliCommand = {
  name: 'info',
  summary: 'show what a disk is (VixDiskLib_GetInfo, qemu-img info)',
  define: (cmd) =>
    withOptions(cmd, readingOptions())
      .option('--json', 'machine-readable output')
      .option('--descriptor', 'VMDK: also print the descriptor text')
      .option('--no-chain', 'inspect this image alone: its parent is not looked for or checked (VD_OPEN_FLAGS_INFO)')
      .argument('<file>')
      .action(async (file: string, o) => {
        await withDisk(file, { readOnly: true, ...openOpts(o), infoOnly: o.chain === false }, async (d) => {
          const info = await d.info();
          const properties = d.getProperties();
          if (o.json) await out(JSON.stringify({ ...info, path: file, properties }, (_k, v) => (v === undefined ? null : v), 2) + '\n');
          else await out(formatInfo(info) + formatProperties(properties));
          if (o.descriptor && 'descriptorText' in d.image) await out('\n' + (d.image as { descriptorText(): string }).descriptorText());
        });
      }),
};
