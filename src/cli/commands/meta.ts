/** `vdkit meta`: list, read or write metadata (VixDiskLib_Read/WriteMetadata). */
import { DiskError } from '../../core/errors.js';
import { withDisk, type CliCommand } from '../command.js';
import { openOpts, withOptions, writingOptions } from '../options.js';
import { out } from '../output.js';

export const meta: CliCommand = {
  name: 'meta',
  summary: 'list, read or write metadata (the VMDK disk database; VixDiskLib_Read/WriteMetadata)',
  define: (cmd) =>
    withOptions(cmd, writingOptions())
      .option('--json', 'list as JSON')
      .argument('<file>')
      .argument('[key]')
      .argument('[value]')
      .action(async (file: string, key: string | undefined, value: string | undefined, o) => {
        await withDisk(file, { readOnly: value === undefined, ...openOpts(o) }, async (d) => {
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
        });
      }),
};
