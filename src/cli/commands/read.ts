/** `vdkit read`: bytes of the virtual disk to stdout, raw or as a hex dump. */
import { withDisk, type CliCommand } from '../command.js';
import { num, openOpts, readingOptions, withOptions } from '../options.js';
import { hexDump, out } from '../output.js';

export const read: CliCommand = {
  name: 'read',
  summary: 'read bytes from the virtual disk to stdout (raw, or a hex dump like the VDDK sample\'s -dump)',
  define: (cmd) =>
    withOptions(cmd, readingOptions())
      .requiredOption('--offset <n>', 'byte offset')
      .requiredOption('--length <n>', 'number of bytes')
      .option('--hex', 'hex dump instead of raw bytes')
      .argument('<file>')
      .action(async (file: string, o) => {
        const offset = num(o.offset, '--offset');
        const length = num(o.length, '--length');
        await withDisk(file, { readOnly: true, ...openOpts(o) }, async (d) => {
          const step = 1024 * 1024;
          for (let at = 0; at < length; at += step) {
            const n = Math.min(step, length - at);
            const buf = await d.read(offset + at, n);
            await out(o.hex ? hexDump(buf, offset + at) : buf);
          }
        });
      }),
};
