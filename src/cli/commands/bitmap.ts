/**
 * `vdkit bitmap (--add | --remove | --clear | --enable | --disable | --merge SOURCE)...
 * [-b SOURCE_IMAGE [-F FMT]] [-g GRANULARITY] IMAGE NAME` (qemu-img bitmap's spellings); the
 * actions run in command-line order. `-l` lists the bitmaps, `--ranges` prints what NAME marks.
 */
import type { CliCommand } from '../command.js';
import { UsageError, formatOpt, num } from '../options.js';
import { out } from '../output.js';

type Step = { op: 'add' | 'remove' | 'clear' | 'enable' | 'disable' } | { op: 'merge'; source: string };

export const bitmap: CliCommand = {
  name: 'bitmap',
  summary: 'add, remove, clear, enable, disable or merge persistent dirty bitmaps of a qcow2 image (qemu-img bitmap); -l lists them',
  define: (cmd) => {
    // commander keeps options by name; the order qemu-img runs them in comes from its events
    const steps: Step[] = [];
    for (const op of ['add', 'remove', 'clear', 'enable', 'disable'] as const) cmd.on(`option:${op}`, () => steps.push({ op }));
    cmd.on('option:merge', (source: string) => steps.push({ op: 'merge', source }));
    return cmd
      .option('--add', 'create the bitmap, enabled (recording writes) unless --disable follows')
      .option('--remove', 'remove the bitmap')
      .option('--clear', 'clear every bit')
      .option('--enable', 'start recording writes')
      .option('--disable', 'stop recording writes')
      .option('--merge <source>', 'set every bit bitmap SOURCE has set (of -b SOURCE_IMAGE, else of this image)')
      .option('-b, --source-image <file>', 'the image --merge reads SOURCE from')
      .option('-F, --source-format <fmt>', 'format of -b')
      .option('-g, --granularity <bytes>', 'with --add: bytes per bit, a power of two from 512 (default: the cluster size, at least 4 KiB)')
      .option('-l, --list', 'list the bitmaps (name, granularity, flags)')
      .option('--ranges', 'print the byte ranges bitmap NAME marks')
      .option('--json', 'with -l or --ranges: JSON')
      .addOption(formatOpt())
      .argument('<file>')
      .argument('[name]')
      .action(async (file: string, name: string | undefined, o) => {
        const ops = await import('../../ops/bitmap.js');
        const opts = { format: o.format as string | undefined };
        if (o.list) {
          const list = await ops.listBitmaps(file, opts);
          if (o.json) await out(JSON.stringify(list, null, 2) + '\n');
          else for (const b of list) await out(`${b.name}  granularity ${b.granularity}  flags [${b.flags.join(', ')}]${b.inconsistent ? '  (inconsistent)' : ''}\n`);
          return;
        }
        if (name === undefined) throw new UsageError('bitmap: give the image and the bitmap name');
        if (o.ranges) {
          const ranges = await ops.bitmapRanges(file, name, opts);
          if (o.json) await out(JSON.stringify(ranges) + '\n');
          else for (const r of ranges) await out(`${r.offset} ${r.length}\n`);
          return;
        }
        if (steps.length === 0) throw new UsageError('bitmap: give at least one of --add, --remove, --clear, --enable, --disable, --merge SOURCE');
        if (o.granularity !== undefined && !steps.some((s) => s.op === 'add')) throw new UsageError('bitmap: -g goes with --add');
        if (o.sourceImage !== undefined && !steps.some((s) => s.op === 'merge')) throw new UsageError('bitmap: -b goes with --merge');
        const granularity = o.granularity === undefined ? undefined : num(o.granularity, '-g');
        const actions = steps.map((s) =>
          s.op === 'merge' ? { op: 'merge' as const, source: s.source, sourceImage: o.sourceImage as string | undefined, sourceFormat: o.sourceFormat as string | undefined } : s.op === 'add' ? { op: 'add' as const, granularity } : { op: s.op },
        );
        await ops.bitmap(file, name, actions, opts);
      });
  },
};
