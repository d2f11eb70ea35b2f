/** `vdkit map`: data / zero / unallocated ranges (qemu-img map). */
import { diskCommand } from '../command.js';
import { json, opt, readingOptions } from '../options.js';
import { out } from '../output.js';

export const map = diskCommand({
  name: 'map',
  summary: 'list data / zero / unallocated ranges of the disk (qemu-img map)',
  options: [...readingOptions(), json(), opt('--all', 'also list zero and unallocated ranges')],
  readOnly: true,
  async run(d, { o }) {
    const ranges = await d.blockStatus();
    if (o.json) {
      await out(JSON.stringify(ranges) + '\n');
      return;
    }
    const shown = o.all ? ranges : ranges.filter((r) => r.state === 'data');
    await out(`${'offset'.padEnd(18)}${'length'.padEnd(18)}state\n`);
    await out(shown.map((r) => `0x${r.offset.toString(16).padEnd(16)}0x${r.length.toString(16).padEnd(16)}${r.state}\n`).join(''));
  },
});
