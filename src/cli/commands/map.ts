/** `vdkit map`: data / zero / unallocated ranges (qemu-img map). */
import { diskCommand } from '../command.js';
import { json, opt, readingOptions } from '../options.js';
import { out } from '../output.js';

export const map = diskCommand({
  name: 'map',
  summary: 'list data / zero / unallocated ranges of the disk (qemu-img map)',
  options: [
    ...readingOptions(),
    json(),
    opt('--output <fmt>', "human (default) or json: qemu-img map's JSON (start, length, depth, present, zero, data, offset)"),
    opt('--all', 'also list zero and unallocated ranges'),
  ],
  readOnly: true,
  parse: async (o) => (await import('../qemu-output.js')).outputFormat(o.output),
  async run(d, { o, p: output }) {
    if (output === 'json') {
      const { formatQemuMap, qemuMap } = await import('../qemu-output.js');
      const { driverByName } = await import('../../formats/registry.js');
      await out(formatQemuMap(await qemuMap(d, driverByName)));
      return;
    }
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
