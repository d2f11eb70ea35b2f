/** `vdkit convert` (alias clone): copy a disk into a new image (qemu-img convert, vmware-vdiskmanager -r). */
import { Option } from 'commander';
import type { ConvertOptions } from '../../ops/convert.js';
import type { CacheMode } from '../../storage/namespace.js';
import { cancelOnSignals, setExitStatus, withDisk, type CliCommand } from '../command.js';
import { TARGET_NAMES, UsageError, newImageFormat, num, openOpts, readingOptions, typeArg, withOptions } from '../options.js';
import { progressFromOptions } from '../progress.js';

export const convert: CliCommand = {
  name: 'convert',
  aliases: ['clone'],
  summary: 'copy a disk into a new image, converting format and type (qemu-img convert, vmware-vdiskmanager -r); "-" as SRC reads raw or streamOptimized from stdin, "-" as DST writes raw or streamOptimized to stdout',
  define: (cmd) =>
    withOptions(cmd, readingOptions())
      .addOption(new Option('-O, --output-format <fmt>', 'target format (see `vdkit formats`); default: the one DST\'s extension names (.vmdk .vdi .vhd .vhdx .qcow2 .raw/.img ...; for "-", --stream-name\'s), else --target\'s'))
      .option('-t, --type <type>', 'target type (VMDK createType or 0-5; streamOptimized is 5)')
      .option('-a, --adapter <type>', 'target adapter type')
      .option('--hw <version>', 'target virtual hardware version')
      .option('-p, --progress', 'show progress on stderr: a bar on a terminal, else a line per per cent (as qemu-img)')
      .option('--json-progress', 'print one JSON line per progress update to stderr, for scripts')
      .option('--overwrite', 'replace an existing target')
      .option('-c, --compress', 'compressed output (qemu-img convert -c): qcow2 compressed clusters, or for vmdk the streamOptimized type')
      .option('--compression-level <n>', 'zlib level 1 (fastest) to 9 (smallest); default 1 for streamOptimized (as VMware writes), 6 for compressed qcow2 (as QEMU)')
      .option('--stream-name <name>', 'streamOptimized to stdout: the file name recorded in the stream (default disk.vmdk)')
      .option('--input-size <size>', 'raw from stdin: its size (needed unless the output is raw to stdout)')
      .option('--size <size>', 'target size (K/M/G/T suffixes): smaller drops the end, larger adds zeros')
      .option('--keep-chain', 'copy a chain link by link into a new chain (lower links: <dst stem>-base.ext, -base-000001.ext, ...)')
      .option('--from <n>', 'with --keep-chain: first link kept as a link, 0 = the base; links below are flattened into the new base')
      .option('--to <n>', 'with --keep-chain: last link copied, 0 = the base (default: the top)')
      .addOption(new Option('--cache <mode>', 'writeback: the target is on the disk (fdatasync) before it gets its name; unsafe: no fdatasync, as qemu-img convert does by default (faster; a host crash soon after can lose the output); durable: writeback, and the new name is synced too').choices(['writeback', 'unsafe', 'durable']).default('writeback'))
      .option('--target <t>', `make what a target takes (${TARGET_NAMES.join(', ')}): format, type, adapter, versions, size rounding; -O/-t/-a/--hw override it (docs/targets.md)`)
      .argument('<src>')
      .argument('<dst>')
      .action(async (src: string, dst: string, o) => {
        const [{ Disk }, ops, { cloneChain }, { copyPieces, openSequentialInput, SequentialImage }, { StreamSink }, { FileNamespace }, targets, { driverByName }] = await Promise.all([
          import('../../disk.js'),
          import('../../ops/convert.js'),
          import('../../ops/clone-chain.js'),
          import('../../ops/stream-in.js'),
          import('../../storage/sink.js'),
          import('../../storage/file.js'),
          import('../../ops/targets.js'),
          import('../../formats/registry.js'),
        ]);
        const progress = progressFromOptions(o);
        // the target is created through a namespace of this cache mode (the source is only read)
        const targetFiles = new FileNamespace({ cacheMode: o.cache as CacheMode });
        const link = (v: string | undefined, what: string) => {
          if (v === undefined) return undefined;
          if (!o.keepChain) throw new UsageError(`${what} needs --keep-chain`);
          if (!/^\d+$/.test(v)) throw new UsageError(`${what}: expected a link number (0 = the base), got ${JSON.stringify(v)}`);
          return Number(v);
        };
        const from = link(o.from, '--from');
        const to = link(o.to, '--to');
        if (o.keepChain && (src === '-' || dst === '-')) throw new UsageError('--keep-chain needs files, not pipes');
        const toStdout = dst === '-';
        const target = toStdout ? (o.streamName ?? 'disk.vmdk') : dst;
        if (o.target !== undefined && !TARGET_NAMES.includes(String(o.target).toLowerCase())) throw new UsageError(`--target: unknown target ${JSON.stringify(o.target)} (known: ${TARGET_NAMES.join(', ')})`);
        const profile = o.target === undefined ? undefined : targets.targetByName(o.target);
        // -O, else DST's extension, else the profile's format (which applyTarget then fills in itself)
        let profileChooses = false;
        const format = await newImageFormat(o.outputFormat, target, '-O', profile && (async () => {
          profileChooses = true;
          return profile.format;
        }));
        if (o.compress) {
          // qcow2 has compressed clusters; VMDK compresses only as its streamOptimized type
          const d = driverByName(format);
          if (!d.writeCompressed && d.sequentialTypes.length === 0) throw new UsageError(`-c: ${format} has no compressed form; compressed output is qcow2 (compressed clusters) or vmdk (streamOptimized)`);
          if (o.keepChain) throw new UsageError('-c cannot be combined with --keep-chain');
          if (toStdout && d.writeCompressed) throw new UsageError(`-c: compressed ${format} cannot be written to stdout (streamOptimized vmdk can)`);
          if (o.type !== undefined && !d.writeCompressed && d.normaliseType(String(o.type)) !== d.sequentialTypes[0]) throw new UsageError(`-c: compressed ${format} is the ${d.sequentialTypes[0]} type, not ${JSON.stringify(o.type)}`);
        }
        if (toStdout && process.stdout.isTTY) throw new UsageError('refusing to write a disk image to a terminal; redirect stdout or give a file name');
        const sink = toStdout ? new StreamSink('-', process.stdout) : undefined;
        const options: ConvertOptions = {
          namespace: targetFiles,
          format,
          type: o.type,
          compress: !!o.compress,
          adapterType: o.adapter,
          hwVersion: o.hw,
          overwrite: o.overwrite,
          capacity: o.size === undefined ? undefined : num(o.size, '--size'),
          compressionLevel: o.compressionLevel === undefined ? undefined : Number(o.compressionLevel),
          sink,
          onProgress: progress?.update,
        };
        // --target: the profile fills in what -O/-t/-a/--hw left open, and rounds the size (docs/targets.md)
        // -t is checked against the format it is for: -O's (or the extension's), or with --target the profile's choice (below)
        if (!profile) typeArg(driverByName(format), o.type, '-t');
        const forTarget = (capacity: number): ConvertOptions => {
          if (!profile) return options;
          const applied = targets.applyTarget(profile, { ...options, format: profileChooses ? undefined : format }, capacity);
          typeArg(driverByName(applied.options.format ?? format), o.type, '-t');
          process.stderr.write(`target ${profile.name} (${profile.title}): ${applied.choices.join('; ') || 'nothing to choose'}\n`);
          for (const c of applied.conflicts) process.stderr.write(`${c.severity}: ${c.message}${c.fix ? ` (${c.fix})` : ''}\n`);
          return applied.options;
        };
        // from here on Ctrl-C / SIGTERM cancel the copy, which removes its partial target
        const cancel = cancelOnSignals();
        options.signal = cancel.signal;
        try {
          if (src === '-') {
            // a read from a pipe that waits for data would not see the abort: end the pipe
            cancel.signal.addEventListener('abort', () => process.stdin.destroy(), { once: true });
            const input = await openSequentialInput(process.stdin, { format: o.format, size: o.inputSize === undefined ? undefined : num(o.inputSize, '--input-size'), sizeField: '--input-size' });
            if (input.capacity === undefined) {
              if (!(toStdout && format === 'raw')) throw new UsageError('raw input from stdin needs --input-size SIZE (unless the output is raw to stdout)');
              await copyPieces(input, sink!);
            } else await ops.convert(Disk.from(new SequentialImage(input, input.capacity)), target, forTarget(input.capacity));
          } else {
            await withDisk(src, { readOnly: true, ...openOpts(o) }, (d) => {
              const x = forTarget(options.capacity ?? d.capacity);
              return o.keepChain ? cloneChain(d, target, { ...x, from, to }) : ops.convert(d, target, x);
            });
          }
        } finally {
          cancel.end();
          progress?.end();
        }
        if (profile && !toStdout) {
          // check the result the way `vdkit lint --target` would
          const findings = await withDisk(dst, { readOnly: true, singleLink: true }, (t) => targets.lint(t, profile));
          for (const f of findings) process.stderr.write(`${f.severity}: ${f.field}: ${f.message}\n`);
          // a refusal fails the command as `lint --target` does (exit 1): the image is made as asked
          // (-O/-t chose against the profile), but a script must not take it for an upload-ready one
          if (targets.accepted(findings)) process.stderr.write(`${dst}: nothing blocks ${profile.name}\n`);
          else {
            process.stderr.write(`${dst}: ${profile.name} would refuse it\n`);
            setExitStatus(1);
          }
        }
      }),
};
