/** `vdkit checksum`: one digest of the disk content, the same in every format, type and chain. */
import { withDisk, type CliCommand } from '../command.js';
import { openOpts, readingOptions, withOptions } from '../options.js';
import { out } from '../output.js';

export const checksum: CliCommand = {
  name: 'checksum',
  summary: 'one digest of the disk content, the same in every format, type and chain',
  define: (cmd) =>
    withOptions(cmd, readingOptions())
      .argument('<file>')
      .action(async (file: string, o) => {
        const { checksum } = await import('../../ops/checksum.js');
        await withDisk(file, { readOnly: true, ...openOpts(o) }, async (d) => {
          await out(`${await checksum(d)}  ${file}\n`);
        });
      }),
};
