/** `vdkit measure`: bytes a new image will take (qemu-img measure, VixDiskLib_SpaceNeededForClone). */
import { withDisk, type CliCommand } from '../command.js';
import { UsageError, num, openOpts, parseCreateOptions, readingOptions, typeArg, withOptions } from '../options.js';
import { out } from '../output.js';

export const measure: CliCommand = {
  name: 'measure',
  summary: 'bytes a new image will take, for a source disk or a bare size (qemu-img measure, VixDiskLib_SpaceNeededForClone)',
  define: (cmd) =>
    withOptions(cmd, readingOptions())
      .requiredOption('-O, --output-format <fmt>', 'target format (see `vdkit formats`)')
      .option('-t, --type <type>', 'target type (VMDK createType, fixed/dynamic, ...)')
      .option('-o, --options <list>', 'qemu-img style target options: subformat, cluster_size, block_size, ... (key=value,...)')
      .option('--size <size>', 'target virtual size (default: the source\'s); FILE may then be omitted')
      .option('--detect-zeroes', 'read the data and count only blocks that are not all zeros (what convert writes)')
      .option('--json', 'machine-readable output')
      .argument('[file]', 'the source disk')
      .action(async (file: string | undefined, o) => {
        if (file === undefined && o.size === undefined) throw new UsageError('measure: give a FILE or --size');
        const extra = parseCreateOptions(o.options);
        const { driverByName } = await import('../../formats/registry.js');
        typeArg(driverByName(o.outputFormat), o.type, '-t');
        typeArg(driverByName(o.outputFormat), extra.type, '-o');
        const target = {
          ...extra,
          format: o.outputFormat as string,
          type: o.type ?? extra.type,
          capacity: o.size === undefined ? undefined : num(o.size, '--size'),
          detectZeroes: !!o.detectZeroes,
        };
        const { measure } = await import('../../ops/measure.js');
        const r = file === undefined ? await measure(undefined, target) : await withDisk(file, { readOnly: true, ...openOpts(o) }, (d) => measure(d, target));
        if (o.json) await out(JSON.stringify({ required: r.required, 'fully-allocated': r.fullyAllocated, capacity: r.capacity, notes: r.notes }, null, 2) + '\n');
        else await out(`required size: ${r.required}\nfully allocated size: ${r.fullyAllocated}\n`);
        if (!o.json) for (const n of r.notes) process.stderr.write(`note: ${n}\n`);
      }),
};
