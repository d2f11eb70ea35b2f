/** `vdkit resize`: grow or shrink the virtual size in place (qemu-img resize, vmware-vdiskmanager -x). */
import type { CliCommand } from '../command.js';
import { formatOpt, num } from '../options.js';
import { humanBytes, out } from '../output.js';

export const resize: CliCommand = {
  name: 'resize',
  summary: 'grow (or with --shrink, shrink) the virtual size in place (qemu-img resize, vmware-vdiskmanager -x); SIZE, +SIZE or -SIZE (-SIZE needs --shrink, as in qemu-img)',
  define: (cmd) =>
    cmd
      .option('--shrink', 'allow a smaller size')
      .option('--force', 'with --shrink: cut off data beyond the new end')
      .addOption(formatOpt())
      .argument('<file>')
      .argument('<size>')
      .action(async (file: string, size: string, o) => {
        const sign = size[0] === '+' ? 1 : size[0] === '-' ? -1 : 0;
        const n = num(sign ? size.slice(1) : size, 'size');
        const { resize } = await import('../../ops/resize.js');
        const r = await resize(file, sign === 0 ? n : sign * n, { relative: sign !== 0, shrink: o.shrink, force: o.force, format: o.format });
        await out(`${file}: ${humanBytes(r.oldCapacity)} -> ${humanBytes(r.newCapacity)} (${r.newCapacity} bytes)\n`);
      }),
};
