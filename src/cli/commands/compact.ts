/**
 * `vdkit compact` (vmware-vdiskmanager -k, VixDiskLib_Shrink), and the in-place relayout command
 * it shares with `vdkit defrag` (defrag.ts).
 */
import type { Command } from 'commander';
import { cancellable, type CliCommand } from '../command.js';
import { formatOpt } from '../options.js';
import { humanBytes, out } from '../output.js';
import { progressFromOptions } from '../progress.js';

/** the options and action of compact and defrag: they differ in the op run and one word of the report */
export function defineInPlace(cmd: Command, name: 'compact' | 'defrag'): Command {
  return cmd
    .option('-p, --progress', 'show progress on stderr: a bar on a terminal, else a line per per cent (as qemu-img)')
    .addOption(formatOpt())
    .argument('<file>')
    .action(async (file: string, o) => {
      const ops = await import('../../ops/compact.js');
      const op = name === 'compact' ? ops.compact : ops.defragment;
      const progress = progressFromOptions(o);
      // Ctrl-C / SIGTERM stop it between steps, each of which leaves the file consistent
      const r = await cancellable((signal) => op(file, { format: o.format, onProgress: progress?.counts, signal })).finally(() => progress?.end());
      const saved = r.fileBytesBefore - r.fileBytesAfter;
      const moved = r.moved === undefined ? '' : `, ${r.moved} data block${r.moved === 1 ? '' : 's'} moved${name === 'defrag' && r.moved === 0 ? ' (already in virtual order)' : ''}`;
      await out(`${file}: ${humanBytes(r.fileBytesBefore)} -> ${humanBytes(r.fileBytesAfter)}${saved > 0 ? ` (${humanBytes(saved)} given back)` : ''}${moved}\n`);
    });
}

export const compact: CliCommand = {
  name: 'compact',
  summary: 'give back the space of grains/blocks that read as zeros or were discarded, in place (vmware-vdiskmanager -k, VixDiskLib_Shrink, VBoxManage modifymedium --compact)',
  define: (cmd) => defineInPlace(cmd, 'compact'),
};
