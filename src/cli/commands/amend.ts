/** `vdkit amend -o KEY=VALUE[,...]`: change creation-time options in place (qemu-img amend). */
import type { CliCommand } from '../command.js';
import { UsageError, formatOpt } from '../options.js';

export const amend: CliCommand = {
  name: 'amend',
  summary: 'change creation-time options in place (qemu-img amend): qcow2 compat, refcount_bits, lazy_refcounts; vmdk adapter_type, hwversion',
  define: (cmd) =>
    cmd
      .requiredOption('-o, --options <list>', 'KEY=VALUE[,KEY=VALUE...] ("-o help" lists the keys of the image\'s format)')
      .addOption(formatOpt())
      .argument('<file>')
      .action(async (file: string, o) => {
        const ops = await import('../../ops/amend.js');
        const { format, options: valid } = await ops.amendOptionsOf(file, { format: o.format });
        const names = valid.map((v) => v.name);
        if (o.options === 'help' || o.options === '?') {
          const { out } = await import('../output.js');
          await out(valid.length === 0 ? `${format} has no amend options\n` : `Amend options for ${format}:\n${valid.map((v) => `  ${v.name.padEnd(16)} ${v.description}\n`).join('')}`);
          return;
        }
        let parsed: Record<string, string>;
        try {
          parsed = ops.parseAmendList(o.options);
        } catch (err) {
          throw new UsageError(`amend: ${(err as Error).message}`);
        }
        if (Object.keys(parsed).length === 0) throw new UsageError('amend: -o names no option');
        // a format with no amend options at all is a refusal (NOTSUPPORTED from the op), not wrong usage
        const unknown = Object.keys(parsed).filter((k) => !names.includes(k));
        if (unknown.length > 0 && valid.length > 0) throw new UsageError(`amend: ${format} has no amend option ${unknown.map((k) => `"${k}"`).join(', ')}; valid: ${names.join(', ')}`);
        await ops.amend(file, parsed, { format });
      }),
};
