/**
 * `vdkit vdiskmanager`: vmware-vdiskmanager's own command line (cli/vdiskmanager.ts). main() hands
 * `vdkit vdiskmanager ...` over before commander parses it, since its single-letter options are its
 * own; this entry gives the command its line in `vdkit --help`.
 */
import { setExitStatus, type CliCommand } from '../command.js';

export const vdiskmanager: CliCommand = {
  name: 'vdiskmanager',
  summary: 'vmware-vdiskmanager\'s own options (-c -s -a -t, -r, -x, -d, -k, -n, -R, -e, -q) for scripts written against it',
  define: (cmd) =>
    cmd
      .helpOption(false)
      .allowUnknownOption()
      .argument('[args...]')
      .action(async (args: string[]) => {
        const { vdiskmanager } = await import('../vdiskmanager.js');
        setExitStatus(await vdiskmanager(args));
      }),
};
