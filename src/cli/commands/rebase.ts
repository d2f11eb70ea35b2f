/** `vdkit rebase`: point a child at another parent (qemu-img rebase). */
import type { CliCommand } from '../command.js';
import { untrusted } from '../options.js';
import { humanBytes, out } from '../output.js';
import { progressFromOptions } from '../progress.js';

export const rebase: CliCommand = {
  name: 'rebase',
  summary: 'point a child at another parent, copying what differs (qemu-img rebase); --unsafe only rewrites the link (repair)',
  define: (cmd) =>
    cmd
      .requiredOption('-b, --backing <file>', 'the new parent ("" for none: the child becomes a standalone disk)')
      .option('-u, --unsafe', 'rewrite the parent hint and CID only (repair a link after the parent moved or its CID changed)')
      .option('-p, --progress', 'show progress on stderr: a bar on a terminal, else a line per per cent (as qemu-img)')
      .addOption(untrusted())
      .argument('<file>')
      .action(async (file: string, o) => {
        const { rebase } = await import('../../ops/rebase.js');
        const progress = progressFromOptions(o);
        const r = await rebase(file, o.backing === '' ? undefined : o.backing, { unsafe: o.unsafe, untrusted: o.untrusted, onProgress: progress?.update }).finally(() => progress?.end());
        await out(`${file} now has parent ${o.backing === '' ? 'none' : o.backing}${o.unsafe ? '' : ` (${humanBytes(r.bytesCopied)} copied)`}\n`);
      }),
};
