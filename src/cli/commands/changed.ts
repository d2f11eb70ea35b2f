/**
 * `vdkit changed [--json] NEWER (--since OLDER | --since '*' | --since-link N | --bitmap NAME)`:
 * the byte ranges that changed (VDDK's QueryChangedDiskAreas; ops/changed.ts).
 */
import type { CliCommand } from '../command.js';
import { UsageError, num, untrusted } from '../options.js';
import { out } from '../output.js';

export const changed: CliCommand = {
  name: 'changed',
  summary: "byte ranges that changed: since an older image or chain link, as a qcow2 dirty bitmap marks, or '*' (all allocated)",
  define: (cmd) =>
    cmd
      .option('--since <older>', "an older image (of any format; a link of NEWER's chain is answered from allocation), or '*' for every allocated range")
      .option('--since-link <n>', 'what the links above depth N store (1: what the top link holds)')
      .option('--bitmap <name>', 'the ranges a persistent dirty bitmap of the top image marks')
      .option('-g, --granularity <bytes>', 'with --since OLDER compared by content: unit of comparison (default 512)')
      .option('-f, --format <fmt>', 'format of NEWER (detected when omitted)')
      .option('-F, --second-format <fmt>', 'format of OLDER (detected when omitted)')
      .option('--json', 'JSON: [{"offset":..,"length":..}, ...]')
      .addOption(untrusted())
      .argument('<newer>')
      .action(async (newer: string, o) => {
        const given = [o.since !== undefined, o.sinceLink !== undefined, o.bitmap !== undefined].filter(Boolean).length;
        if (given !== 1) throw new UsageError("changed: give exactly one of --since OLDER, --since '*', --since-link N, --bitmap NAME");
        const [{ Disk }, ops] = await Promise.all([import('../../disk.js'), import('../../ops/changed.js')]);
        const d = await Disk.open(newer, { readOnly: true, format: o.format, untrusted: o.untrusted });
        try {
          let ranges;
          if (o.since === '*') ranges = await ops.changedRanges(d, { allocated: true });
          else if (o.sinceLink !== undefined) ranges = await ops.changedRanges(d, { sinceLink: num(o.sinceLink, '--since-link') });
          else if (o.bitmap !== undefined) ranges = await ops.changedRanges(d, { bitmap: o.bitmap });
          else {
            const old = await Disk.open(o.since, { readOnly: true, format: o.secondFormat, untrusted: o.untrusted });
            try {
              ranges = await ops.changedRanges(d, { since: old, granularity: o.granularity === undefined ? undefined : num(o.granularity, '-g') });
            } finally {
              await old.close();
            }
          }
          if (o.json) await out(JSON.stringify(ranges) + '\n');
          else await out(ranges.map((r) => `${r.offset} ${r.length}\n`).join('') + `# ${ranges.length} range(s), ${ops.rangeBytes(ranges)} bytes\n`);
        } finally {
          await d.close();
        }
      }),
};
