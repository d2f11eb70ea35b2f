/** `vdkit formats`: the formats vdkit handles and what each can do (VDBackendInfo). */
import type { CliCommand } from '../command.js';
import { out } from '../output.js';

export const formats: CliCommand = {
  name: 'formats',
  summary: 'list the formats vdkit handles and what each can do (VDBackendInfo)',
  define: (cmd) =>
    cmd.option('--json', 'machine-readable output').action(async (o) => {
      const { backendInfo } = await import('../../formats/registry.js');
      const list = backendInfo();
      if (o.json) {
        await out(JSON.stringify(list, null, 2) + '\n');
        return;
      }
      for (const b of list) {
        const c = b.capabilities;
        const can = [
          c.write === 'native' ? 'write' : 'read-only',
          c.differencing ? 'differencing' : '',
          c.split ? 'split' : '',
          c.discard !== 'none' ? 'discard' : '',
          c.compact !== 'none' ? 'compact' : '',
          c.defragment !== 'none' ? 'defrag' : '',
          c.resize !== 'none' ? `resize (${c.resize})` : '',
          c.metadata ? 'metadata' : '',
          c.internalSnapshots ? 'internal snapshots (read: convert -l)' : '',
        ].filter(Boolean);
        await out(`${b.name.padEnd(6)} ${b.description}\n       files: ${b.extensions.map((e) => `.${e}`).join(' ')}; types: ${c.createTypes.join(', ')}; ${can.join(', ')}\n`);
        for (const opt of b.createOptions) await out(`       create option ${opt.name}: ${opt.description}\n`);
      }
    }),
};
