/** `vdkit check`: corruptions and leaks of a disk and its chain (qemu-img check, VDRepair). */
import { setExitStatus, type CliCommand } from '../command.js';
import { UsageError, external, formatOpt, openOpts, untrusted, withOptions } from '../options.js';
import { out } from '../output.js';

export const check: CliCommand = {
  name: 'check',
  summary: 'check a disk and its chain for corruptions and leaks (qemu-img check, VDRepair, VixDiskLib_CheckRepair); exit 0 clean, 2 corruptions, 3 leaks only, 1 could not check',
  define: (cmd) =>
    withOptions(cmd, [formatOpt(), untrusted(), external()])
      .option('-r, --repair', 'repair what can be repaired (opens the disk read-write)')
      .option('-n, --dry-run', 'with --repair: say what a repair would change, change nothing')
      .option('--json', 'machine-readable report')
      .argument('<file>')
      .action(async (file: string, o) => {
        if (o.dryRun && !o.repair) throw new UsageError('--dry-run goes with --repair');
        const { checkDisk, openFindings } = await import('../../ops/check.js');
        const report = await checkDisk(file, { ...openOpts(o), repair: !!o.repair, dryRun: !!o.dryRun });
        const { corruptions, leaks } = openFindings(report);
        if (o.json) await out(JSON.stringify(report, null, 2) + '\n');
        else {
          for (const r of [report, ...(report.links ?? [])]) {
            const prefix = r === report ? '' : `${r.path}: `;
            for (const f of r.findings) {
              const label = f.repaired ? 'Repaired' : f.wouldRepair ? 'Would repair' : f.kind === 'corruption' ? 'ERROR' : f.kind === 'leak' ? 'Leaked' : 'Warning';
              await out(`${label}: ${prefix}${f.message}${f.field ? ` (${[f.struct, f.field].filter(Boolean).join('.')})` : ''}\n`);
            }
          }
          await out(corruptions === 0 && leaks === 0 ? 'No errors were found on the image.\n' : `${corruptions} errors and ${leaks} leaks were found on the image${report.dryRun ? ' (dry run: nothing was changed)' : ''}.\n`);
        }
        if (corruptions > 0) setExitStatus(2);
        else if (leaks > 0) setExitStatus(3);
      }),
};
