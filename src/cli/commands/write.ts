/** `vdkit write`: bytes from stdin (or a file) into the virtual disk. */
import { diskCommand } from '../command.js';
import { num, opt, required, writingOptions } from '../options.js';

export const write = diskCommand({
  name: 'write',
  summary: 'write bytes from stdin (or --input FILE) into the virtual disk at --offset',
  options: [...writingOptions(), required('--offset <n>', 'byte offset'), opt('--input <file>', 'read the data from this file instead of stdin')],
  readOnly: false,
  parse: (o) => num(o.offset, '--offset'),
  async run(d, { o, p: offset }) {
    const { hostReadStream } = await import('../../storage/file.js');
    const input = o.input ? hostReadStream(o.input) : process.stdin;
    let at = offset;
    for await (const chunk of input) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
      await d.write(at, buf);
      at += buf.length;
    }
    await d.flush();
    process.stderr.write(`wrote ${at - offset} bytes at offset ${offset}\n`);
  },
});
