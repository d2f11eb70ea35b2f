/** `vdkit checksum`: one digest of the disk content, the same in every format, type and chain. */
import { diskCommand } from '../command.js';
import { readingOptions } from '../options.js';
import { out } from '../output.js';

export const checksum = diskCommand({
  name: 'checksum',
  summary: 'one digest of the disk content, the same in every format, type and chain',
  options: readingOptions(),
  readOnly: true,
  async run(d, { file }) {
    const { checksum } = await import('../../ops/checksum.js');
    await out(`${await checksum(d)}  ${file}\n`);
  },
});
