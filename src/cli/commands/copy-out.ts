/**
 * `vdkit copy-out IMAGE[:PART] PATH... DEST`: files and trees of the disk's filesystem copied
 * into the host directory DEST (virt-copy-out), read-only, keeping modes and times where the
 * host allows and leaving zero blocks as holes. Names that would escape DEST are refused (exit
 * status 1 once the rest is copied); links pointing out of DEST, devices and fifos are skipped
 * with a warning. The copying itself is in ../copy-out.ts.
 */
import { UsageError, readingOptions, withOptions } from '../options.js';
import { setExitStatus, type CliCommand } from '../command.js';

export const copyOut: CliCommand = {
  name: 'copy-out',
  summary: 'copy files or directories out of the disk\'s filesystem into a host directory (IMAGE[:PART] PATH... DEST)',
  define: (cmd) =>
    withOptions(cmd, readingOptions())
      .argument('<image>', 'the disk image, or IMAGE:PART for one partition or volume')
      .argument('<paths...>', 'files or directories in the filesystem, then DEST: an existing host directory')
      .action(async (image: string, args: string[], o) => {
        if (args.length < 2) throw new UsageError('copy-out needs at least one PATH and a DEST directory');
        const dest = args[args.length - 1]!;
        const paths = args.slice(0, -1);
        const { withFilesystem } = await import('../inside-target.js');
        const { copyOut: copy } = await import('../copy-out.js');
        await withFilesystem(image, o, async (fs) => {
          const r = await copy(fs, paths, dest, { warn: (text) => process.stderr.write(`warning: ${text}\n`) });
          if (r.refused > 0) {
            process.stderr.write(`vdkit copy-out: refused ${r.refused} name(s) that would escape ${dest}\n`);
            setExitStatus(1);
          }
        });
      }),
};
