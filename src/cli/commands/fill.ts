/** `vdkit fill`: sectors set to one byte value (the VDDK sample's -fill). */
import { SECTOR_SIZE, checkRange } from '../../core/ints.js';
import { diskCommand } from '../command.js';
import { UsageError, num, opt, required, writingOptions } from '../options.js';

export const fill = diskCommand({
  name: 'fill',
  summary: 'fill sectors with one byte value (the VDDK sample\'s -fill)',
  options: [...writingOptions(), required('--start <sector>', 'first sector'), required('--count <n>', 'number of sectors', '1'), opt('--value <byte>', 'byte value, decimal or 0x hex', '0xff')],
  readOnly: false,
  parse(o) {
    const start = num(o.start, '--start');
    const count = num(o.count, '--count');
    const value = Number(o.value);
    if (!Number.isInteger(value) || value < 0 || value > 255) throw new UsageError(`--value: expected a byte 0..255, got ${JSON.stringify(o.value)}`);
    return { start, count, value };
  },
  async run(d, { p: { start, count, value } }) {
    // the whole range first: a range running off the end must not fill the part that fits
    checkRange(start * SECTOR_SIZE, count * SECTOR_SIZE, d.capacity, d.path);
    const per = 2048; // sectors per write (1 MiB)
    const buf = Buffer.alloc(per * SECTOR_SIZE, value);
    for (let s = 0; s < count; s += per) {
      const n = Math.min(per, count - s);
      await d.writeSectors(start + s, buf.subarray(0, n * SECTOR_SIZE));
    }
    await d.flush();
  },
});
