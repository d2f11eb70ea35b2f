/** `vdkit meta`: list, read or write metadata (VixDiskLib_Read/WriteMetadata). */
import { DiskError } from '../../core/errors.js';
import { diskCommand } from '../command.js';
import { json, writingOptions } from '../options.js';
import { out } from '../output.js';

export const meta = diskCommand({
  name: 'meta',
  summary: 'list, read or write metadata (the VMDK disk database; VixDiskLib_Read/WriteMetadata)',
  options: [...writingOptions(), json('list as JSON')],
  args: ['[key]', '[value]'],
  readOnly: false,
  // listing and reading leave the disk closed for writing
  openOptions: ({ args: [, value] }) => ({ readOnly: value === undefined }),
  async run(d, { o, file, args: [key, value] }) {
    if (key === undefined) {
      const entries = d.metadataKeys().map((k) => [k, d.readMetadata(k) ?? ''] as const);
      if (o.json) await out(JSON.stringify(Object.fromEntries(entries), null, 2) + '\n');
      else await out(entries.map(([k, v]) => `${k} = ${v}\n`).join(''));
    } else if (value === undefined) {
      const v = d.readMetadata(key);
      if (v === undefined) throw new DiskError('INVAL', `no metadata key ${JSON.stringify(key)}`, { path: file, field: key });
      await out(v + '\n');
    } else {
      await d.writeMetadata(key, value);
    }
  },
});
