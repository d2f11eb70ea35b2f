/** `vdkit dd`: qemu-img dd's operands (if= of= bs= count= skip=), into a new image of any format. */
import { Option } from 'commander';
import { cancellable, type CliCommand } from '../command.js';
import { UsageError, newImageFormat, num, parseCreateOptions, typeArg } from '../options.js';
import { humanBytes, out } from '../output.js';

const OPERANDS = ['if', 'of', 'bs', 'count', 'skip'] as const;
type Operand = (typeof OPERANDS)[number];

/** `key=value` operands, each at most once, as qemu-img dd reads them */
export function parseOperands(args: readonly string[]): Partial<Record<Operand, string>> {
  const r: Partial<Record<Operand, string>> = {};
  for (const a of args) {
    const eq = a.indexOf('=');
    const key = (eq < 0 ? a : a.slice(0, eq)) as Operand;
    if (eq < 0 || !OPERANDS.includes(key)) throw new UsageError(`unrecognized operand ${JSON.stringify(a)} (known: ${OPERANDS.map((k) => k + '=').join(' ')})`);
    if (r[key] !== undefined) throw new UsageError(`${key}= given twice`);
    r[key] = a.slice(eq + 1);
  }
  return r;
}

export const dd: CliCommand = {
  name: 'dd',
  summary: 'copy blocks of a disk into a new image (qemu-img dd): if=SRC of=DST [bs=N] [count=N] [skip=N]; the copy stays sparse',
  define: (cmd) =>
    cmd
      .addOption(new Option('-f, --format <fmt>', 'format of SRC (detected when omitted)'))
      .addOption(new Option('-O, --output-format <fmt>', 'format of DST; default: the one its name\'s extension names, else raw (as qemu-img dd)'))
      .option('-t, --type <type>', 'type of DST (see `vdkit formats`)')
      .option('-o, --options <list>', 'create options of DST (qemu-img style key=value,...)')
      .option('-U, --force-share', 'accepted for qemu-img scripts: vdkit takes no image locks, so SRC is always opened shared')
      .option('--overwrite', 'replace DST if it exists (qemu-img dd replaces it silently; vdkit refuses unless asked)')
      .argument('<operands...>', 'if=SRC of=DST bs=BYTES (default 512, K/M/G suffixes) count=BLOCKS skip=BLOCKS')
      .action(async (args: string[], o) => {
        const ops = parseOperands(args);
        if (ops.if === undefined || ops.of === undefined) throw new UsageError('if= and of= are both required');
        const blockSize = ops.bs === undefined ? 512 : num(ops.bs, 'bs');
        if (blockSize < 1 || blockSize > 0x7fffffff) throw new UsageError(`bs=${ops.bs}: must be between 1 and 2147483647 bytes`);
        const count = ops.count === undefined ? undefined : num(ops.count, 'count');
        const skip = ops.skip === undefined ? 0 : num(ops.skip, 'skip');
        const extra = parseCreateOptions(o.options);
        const format = await newImageFormat(o.outputFormat, ops.of, '-O', async () => 'raw');
        const { driverByName } = await import('../../formats/registry.js');
        typeArg(driverByName(format), o.type ?? extra.type, '-t');
        const { dd: copy } = await import('../../ops/dd.js');
        const r = await cancellable((signal) =>
          copy(ops.if!, ops.of!, { blockSize, count, skip, inputFormat: o.format, signal, output: { ...extra, format, type: o.type ?? extra.type, overwrite: o.overwrite } }),
        );
        await out(`copied ${r.bytes} bytes (${humanBytes(r.bytes)}) into ${ops.of}, ${r.written} bytes written (the rest reads as zeros)\n`);
      }),
};
