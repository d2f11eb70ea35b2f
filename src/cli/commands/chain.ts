/** `vdkit chain`: the links of a chain, top to bottom, and any break. */
import { DiskError, type ErrorCode } from '../../core/errors.js';
import type { CliCommand } from '../command.js';
import { untrusted } from '../options.js';
import { humanBytes, out } from '../output.js';

export const chain: CliCommand = {
  name: 'chain',
  summary: 'list the links of a chain, top to bottom, with CIDs, parent hints, sizes and any break',
  define: (cmd) =>
    cmd
      .option('--json', 'machine-readable output')
      .addOption(untrusted())
      .argument('<file>')
      .action(async (file: string, o) => {
        const { describeChain } = await import('../../ops/chain-list.js');
        const c = await describeChain(file, { untrusted: o.untrusted });
        if (o.json) {
          await out(JSON.stringify({ links: c.links, break: c.break ?? null }, (_k, v) => (v === undefined ? null : v), 2) + '\n');
        } else {
          const rows = c.links.map((l, i) => {
            const idName = l.format === 'vmdk' ? 'CID' : 'id';
            const parent = !l.hasParent ? 'base' : `parent ${l.parentHint ? `"${l.parentHint}"` : '(found by id)'} (parent ${idName} ${l.parentCid ?? '-'})`;
            return `${String(i + 1).padStart(3)}  ${l.path}\n     ${l.format} ${l.type}, ${humanBytes(l.capacity)}, ${idName} ${l.cid ?? '-'}, ${humanBytes(l.allocatedBytes)} allocated, ${humanBytes(l.fileSize)} on file; ${parent}\n`;
          });
          await out(rows.join(''));
          if (c.break) await out(`BROKEN below ${c.break.at}: ${c.break.code}: ${c.break.reason}\n`);
        }
        if (c.break) throw new DiskError(c.break.code as ErrorCode, c.break.reason);
      }),
};
