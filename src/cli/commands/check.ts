/** `vdkit check`: corruptions and leaks of a disk and its chain (qemu-img check, VDRepair). */
import { Option } from 'commander';
import type { CheckReport } from '../../formats/types.js';
import { setExitStatus, type CliCommand } from '../command.js';
import { QEMU_FORMAT_NAMES, UsageError, external, formatOpt, openOpts, rawDevice, untrusted, withOptions } from '../options.js';
import { out } from '../output.js';

const SCOPES = ['leaks', 'all'] as const;

/**
 * `qemu-img check --output=json`'s object (QAPI ImageCheck): the counts leave out what is zero,
 * as QEMU's do, and they count clusters and entries (a finding's `count`), as QEMU's lines do.
 * A chain check's parents count too, as they do in the exit status.
 */
export function qemuCheckJson(file: string, report: CheckReport): Record<string, unknown> {
  const n: Record<string, number> = { leaks: 0, corruptions: 0, 'leaks-fixed': 0, 'corruptions-fixed': 0 };
  for (const r of [report, ...(report.links ?? [])]) {
    for (const f of r.findings) {
      if (f.kind === 'warning') continue;
      const key = f.kind === 'leak' ? 'leaks' : 'corruptions';
      n[f.repaired ? `${key}-fixed` : key]! += f.count ?? 1;
    }
  }
  const s = report.stats;
  const qemuFormat = Object.entries(QEMU_FORMAT_NAMES).find(([, ours]) => ours === report.format)?.[0] ?? report.format;
  return {
    ...(s ? { 'image-end-offset': s.imageEndOffset, 'total-clusters': s.totalClusters } : {}),
    'check-errors': 0,
    ...Object.fromEntries(Object.entries(n).filter(([, v]) => v > 0)),
    ...(s && s.allocatedClusters > 0 ? { 'allocated-clusters': s.allocatedClusters } : {}),
    ...(s && s.compressedClusters > 0 ? { 'compressed-clusters': s.compressedClusters } : {}),
    ...(s && s.fragmentedClusters > 0 ? { 'fragmented-clusters': s.fragmentedClusters } : {}),
    filename: file,
    format: qemuFormat,
  };
}

export const check: CliCommand = {
  name: 'check',
  summary: 'check a disk and its chain for corruptions and leaks (qemu-img check, VDRepair, VixDiskLib_CheckRepair); exit 0 clean, 2 corruptions, 3 leaks only, 1 could not check (as qemu-img check)',
  define: (cmd) =>
    withOptions(cmd, [formatOpt(), untrusted(), external(), rawDevice()])
      .option('-r, --repair [leaks|all]', 'repair (opens the disk read-write): leaks = only when nothing but leaks was found (a disk with corruptions is left alone), all = everything vdkit can (the default)')
      .option('-n, --dry-run', 'with --repair: say what a repair would change, change nothing')
      .option('--json', 'machine-readable report (vdkit\'s findings)')
      .addOption(new Option('--output <fmt>', 'human, or json: qemu-img check --output=json\'s keys').choices(['human', 'json']))
      .argument('[file]')
      .action(async (fileArg: string | undefined, o) => {
        let file = fileArg;
        let scope: 'leaks' | 'all' | undefined;
        if (o.repair === true) scope = 'all';
        else if (typeof o.repair === 'string') {
          if ((SCOPES as readonly string[]).includes(o.repair)) scope = o.repair as 'leaks' | 'all';
          // `-r IMAGE` (vdkit before -r took a value): the file, repaired whole
          else if (file === undefined) [file, scope] = [o.repair, 'all'];
          else throw new UsageError(`-r: expected leaks or all, got ${JSON.stringify(o.repair)}`);
        }
        if (file === undefined) throw new UsageError("missing required argument 'file'");
        if (o.dryRun && !scope) throw new UsageError('--dry-run goes with --repair');
        if (o.json && o.output === 'json') throw new UsageError('--json and --output=json are two different reports: choose one');
        const { checkDisk, openFindings } = await import('../../ops/check.js');
        const report = await checkDisk(file, { ...openOpts(o), repair: !!scope, repairScope: scope, dryRun: !!o.dryRun });
        const { corruptions, leaks } = openFindings(report);
        if (o.json) await out(JSON.stringify(report, null, 2) + '\n');
        else if (o.output === 'json') await out(JSON.stringify(qemuCheckJson(file, report), null, 4) + '\n');
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
