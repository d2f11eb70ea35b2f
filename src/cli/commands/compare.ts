/** `vdkit compare`: the content of two disks of any formats (qemu-img compare). */
import { DiskError } from '../../core/errors.js';
import { setExitStatus, type CliCommand } from '../command.js';
import { QEMU_FORMAT_NAMES, untrusted } from '../options.js';
import { out } from '../output.js';

export const compare: CliCommand = {
  name: 'compare',
  summary: 'compare the content of two disks of any formats (qemu-img compare): exit 0 identical, 1 different, 2 error',
  define: (cmd) =>
    cmd
      .option('-f, --format <fmt>', 'format of the first disk (detected when omitted)')
      .option('-F, --second-format <fmt>', 'format of the second disk (detected when omitted)')
      .option('-s, --strict', 'also fail on different sizes or allocation')
      .addOption(untrusted())
      .argument('<a>')
      .argument('<b>')
      .action(async (a: string, b: string, o) => {
        const [{ Disk }, { compare }] = await Promise.all([import('../../disk.js'), import('../../ops/compare.js')]);
        try {
          const da = await Disk.open(a, { readOnly: true, format: o.format ? (QEMU_FORMAT_NAMES[o.format] ?? o.format) : undefined, untrusted: o.untrusted });
          try {
            const db = await Disk.open(b, { readOnly: true, format: o.secondFormat ? (QEMU_FORMAT_NAMES[o.secondFormat] ?? o.secondFormat) : undefined, untrusted: o.untrusted });
            try {
              const r = await compare(da, db, { strict: o.strict });
              if (r.identical) await out('Images are identical.\n');
              else {
                await out(`Content mismatch at offset ${r.offset}! (${r.reason})\n`);
                setExitStatus(1);
              }
            } finally {
              await db.close();
            }
          } finally {
            await da.close();
          }
        } catch (err) {
          if (!(err instanceof DiskError)) throw err;
          process.stderr.write(`vdkit: ${err.code} (${err.number}): ${err.message}\n`);
          setExitStatus(2); // qemu-img compare: 2 means the comparison itself failed
        }
      }),
};
