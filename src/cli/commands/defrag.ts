/** `vdkit defrag` (alias defragment): grains/blocks in virtual order (vmware-vdiskmanager -d, VixDiskLib_Defragment). */
import type { CliCommand } from '../command.js';
import { defineInPlace } from './compact.js';

export const defrag: CliCommand = {
  name: 'defrag',
  aliases: ['defragment'],
  summary: 'put grains/blocks in virtual order in the file(s), in place (vmware-vdiskmanager -d, VixDiskLib_Defragment)',
  define: (cmd) => defineInPlace(cmd, 'defrag'),
};
