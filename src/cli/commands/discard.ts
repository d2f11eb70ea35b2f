/** `vdkit discard`: mark a byte range unused (TRIM, VDDiscardRanges). */
import type { CliCommand } from '../command.js';
import { formatOpt, num, untrusted } from '../options.js';
import { humanBytes, out } from '../output.js';

export const discard: CliCommand = {
  name: 'discard',
  summary: 'mark a byte range unused (TRIM, VDDiscardRanges): it reads zeros afterwards; whole grains/blocks are freed where the format can',
  define: (cmd) =>
    cmd
      .requiredOption('--offset <bytes>', 'start of the range (K/M/G suffixes allowed)')
      .requiredOption('--length <bytes>', 'length of the range')
      .option('--force', 'discard even though a child depends on this disk')
      .addOption(formatOpt())
      .addOption(untrusted())
      .argument('<file>')
      .action(async (file: string, o) => {
        const offset = num(o.offset, '--offset');
        const length = num(o.length, '--length');
        const { discard } = await import('../../ops/discard.js');
        const r = await discard(file, offset, length, { format: o.format, force: o.force, untrusted: o.untrusted });
        await out(`${file}: discarded ${humanBytes(length)} at ${offset} (${humanBytes(r.unitBytes)} freed as whole units, ${humanBytes(r.zeroedBytes)} written as zeros)\n`);
      }),
};
