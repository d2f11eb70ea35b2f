/** `vdkit read`: bytes of the virtual disk to stdout, raw or as a hex dump. */
import { checkRange } from '../../core/ints.js';
import { diskCommand } from '../command.js';
import { num, opt, readingOptions, required } from '../options.js';
import { hexDump, out } from '../output.js';

export const read = diskCommand({
  name: 'read',
  summary: 'read bytes from the virtual disk to stdout (raw, or a hex dump like the VDDK sample\'s -dump)',
  options: [...readingOptions(), required('--offset <n>', 'byte offset'), required('--length <n>', 'number of bytes'), opt('--hex', 'hex dump instead of raw bytes')],
  readOnly: true,
  parse: (o) => ({ offset: num(o.offset, '--offset'), length: num(o.length, '--length') }),
  async run(d, { o, p: { offset, length } }) {
    // the whole range first: a range running off the end must not leave part of it on stdout
    checkRange(offset, length, d.capacity, d.path);
    const step = 1024 * 1024;
    for (let at = 0; at < length; at += step) {
      const n = Math.min(step, length - at);
      const buf = await d.read(offset + at, n);
      await out(o.hex ? hexDump(buf, offset + at) : buf);
    }
  },
});
