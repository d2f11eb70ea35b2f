/** `vdkit commit`: fold a child into its parent, or parents into the child (qemu-img commit, VDMerge). */
import type { CliCommand } from '../command.js';
import { untrusted } from '../options.js';
import { humanBytes, out } from '../output.js';
import { progressFromOptions } from '../progress.js';

export const commit: CliCommand = {
  name: 'commit',
  summary: 'fold a child into its parent (or the links down to --base), or with --into-top pull parents into the child (qemu-img commit, VDMerge)',
  define: (cmd) =>
    cmd
      .option('-b, --base <file>', 'the link to commit into (default: the parent); with --into-top, the link that becomes the parent')
      .option('--drop', 'remove the top after committing (default: keep it as an empty child)')
      .option('--into-top', 'merge the parents into the top instead (the other direction)')
      .option('--all', 'with --into-top: merge every parent, making the top a standalone disk')
      .option('--force', 'commit even though the base has other children')
      .option('-p, --progress', 'show progress on stderr: a bar on a terminal, else a line per per cent (as qemu-img)')
      .addOption(untrusted())
      .argument('<top>')
      .action(async (top: string, o) => {
        const { commit, mergeIntoTop } = await import('../../ops/commit.js');
        const progress = progressFromOptions(o);
        const onProgress = progress?.update;
        if (o.intoTop) {
          const r = await mergeIntoTop(top, { base: o.base, all: o.all, untrusted: o.untrusted, onProgress }).finally(() => progress?.end());
          await out(`merged ${humanBytes(r.bytesCopied)} into ${top}; its parent is now ${r.parent ?? 'none (standalone disk)'}\n`);
        } else {
          const r = await commit(top, { base: o.base, drop: o.drop, force: o.force, untrusted: o.untrusted, onProgress }).finally(() => progress?.end());
          await out(`committed ${humanBytes(r.bytesCopied)} into ${r.base}\n`);
        }
      }),
};
