/** `vdkit write`: bytes from stdin (or a file) into the virtual disk. */
import { withDisk, type CliCommand } from '../command.js';
import { num, openOpts, withOptions, writingOptions } from '../options.js';

export const write: CliCommand = {
  name: 'write',
  summary: 'write bytes from stdin (or --input FILE) into the virtual disk at --offset',
  define: (cmd) =>
    withOptions(cmd, writingOptions())
      .requiredOption('--offset <n>', 'byte offset')
      .option('--input <file>', 'read the data from this file instead of stdin')
      .argument('<file>')
      .action(async (file: string, o) => {
        const offset = num(o.offset, '--offset');
        const { hostReadStream } = await import('../../storage/file.js');
        await withDisk(file, { readOnly: false, ...openOpts(o) }, async (d) => {
          const input = o.input ? hostReadStream(o.input) : process.stdin;
          let at = offset;
          for await (const chunk of input) {
            const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
            await d.write(at, buf);
            at += buf.length;
          }
          await d.flush();
          process.stderr.write(`wrote ${at - offset} bytes at offset ${offset}\n`);
        });
      }),
};
