/** `vdkit convert` (alias clone): copy a disk into a new image (qemu-img convert, vmware-vdiskmanager -r). */
import { Option } from 'commander';
import { DiskError } from '../../core/errors.js';
import type { ConvertOptions } from '../../ops/convert.js';
import type { CacheMode } from '../../storage/namespace.js';
import { cancelOnSignals, setExitStatus, withDisk, type CliCommand } from '../command.js';
import { TARGET_NAMES, UsageError, formatArg, newImageFormat, num, openOpts, parseCreateOptions, readingOptions, typeArg, withOptions } from '../options.js';
import { checkBitmaps, convertTuning } from './convert-args.js';
import { progressFromOptions } from '../progress.js';

const withoutSnapshot = <T extends { snapshot?: unknown }>(t: T): Omit<T, 'snapshot'> => {
  const { snapshot: _snapshot, ...rest } = t;
  return rest;
};

export const convert: CliCommand = {
  name: 'convert',
  aliases: ['clone'],
  summary: 'copy a disk into a new image, converting format and type (qemu-img convert, vmware-vdiskmanager -r); "-" as SRC reads raw or streamOptimized from stdin ("-#disk1.vmdk" or "-#1": a disk of an OVA on stdin; vm.ova#disk1.vmdk or vm.ova#1 reads one from an OVA file), "-" as DST writes raw or streamOptimized to stdout',
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
      .option('-o, --options <list>', 'qemu-img style create options for the target: subformat, compat, adapter_type, hwversion, cluster_size, block_size, preallocation, compression_type (qcow2: zlib, zstd), data_file, data_file_raw (qcow2) (key=value,...); not with -n')
      .option('-n, --skip-create', 'write into the existing image DST (at least SRC\'s size; opened as -O when given, else as its content says) instead of creating it; bytes past SRC\'s size are left as they are, and ranges of SRC that read as zeros are written as zeros where DST does not read zeros already (qemu-img convert -n)')
      .option('--target-is-zero', 'with -n: DST reads as zeros already, so zero ranges are not written at all')
      .option('-B, --backing <file>', 'make DST a child of this image (qcow2, vmdk, vhd, vhdx, vdi; named relative to DST\'s folder, as a backing file name is) and write only the blocks that differ from it')
      .option('-F, --backing-format <fmt>', 'with -B: the backing image\'s format (detected when omitted)')
      .option('-S, --sparse-size <size>', 'the shortest run of zeros left unwritten (a hole), a multiple of 512 up to 16M; rounded up to whole allocation units of the target (qcow2 clusters, VMDK grains, VDI blocks); 0 writes every byte (fully allocated); default 64K, or one unit where the target\'s is larger')
      .option('-m, --coroutines <n>', 'chunks read and written at once, 1 to 16 (default 3); with -c or streamOptimized output: compression threads')
      .option('-W, --out-of-order', 'let writes reach DST out of order: each chunk is written as soon as it is read (qemu-img convert -W)')
      .option('--bitmaps', 'copy SRC\'s persistent dirty bitmaps (qcow2 to qcow2, as qemu-img); SRC with none: nothing to copy; SRC with some is refused: copying them is not supported yet')
      .option('-U, --force-share', 'open SRC without taking a lock (qemu-img -U); vdkit never locks an image, so this is always so')
      .option('-l, --snapshot <param>', 'read SRC as it was at an internal snapshot (qcow2): snapshot.id=ID, snapshot.name=NAME (both: they must name the same one), or an ID or NAME (an ID first, as qemu-img)')
      .option('--target <t>', `make what a target takes (${TARGET_NAMES.join(', ')}): format, type, adapter, versions, size rounding; -O/-t/-a/--hw override it (docs/targets.md)`)
      .argument('<src>')
      .argument('<dst>')
      .action(async (src: string, dst: string, o) => {
        const [{ Disk }, ops, { cloneChain }, { copyPieces, openSequentialInput, SequentialImage }, { StreamSink }, { FileNamespace }, targets, { driverByName }, { locate }] = await Promise.all([
          import('../../disk.js'),
          import('../../ops/convert.js'),
          import('../../ops/clone-chain.js'),
          import('../../ops/stream-in.js'),
          import('../../storage/sink.js'),
          import('../../storage/file.js'),
          import('../../ops/targets.js'),
          import('../../formats/registry.js'),
          import('../../storage/locations.js'),
        ]);
        // a URL target: an NBD export exists with its size, so it is written into as with -n
        // (qemu-img convert -n nbd://...), as raw bytes unless -O names a format; an s3:// name is
        // created as a file is
        const remote = await locate(dst);
        if (remote?.readOnly) throw new DiskError('RDONLY', `cannot be a convert target: ${remote.readOnly}`, { path: remote.name });
        if (remote?.existingOnly) o.skipCreate = true;
        const progress = progressFromOptions(o);
        // the target is created through a namespace of this cache mode (the source is only read)
        const targetFiles = remote?.namespace ?? new FileNamespace({ cacheMode: o.cache as CacheMode });
        const link = (v: string | undefined, what: string) => {
          if (v === undefined) return undefined;
          if (!o.keepChain) throw new UsageError(`${what} needs --keep-chain`);
          if (!/^\d+$/.test(v)) throw new UsageError(`${what}: expected a link number (0 = the base), got ${JSON.stringify(v)}`);
          return Number(v);
        };
        const tuning = await convertTuning(o, src, dst);
        const from = link(o.from, '--from');
        const to = link(o.to, '--to');
        if (o.keepChain && (src === '-' || src.startsWith('-#') || dst === '-')) throw new UsageError('--keep-chain needs files, not pipes');
        const toStdout = dst === '-';
        const target = toStdout ? (o.streamName ?? 'disk.vmdk') : (remote?.name ?? dst);
        if (o.target !== undefined && !TARGET_NAMES.includes(String(o.target).toLowerCase())) throw new UsageError(`--target: unknown target ${JSON.stringify(o.target)} (known: ${TARGET_NAMES.join(', ')})`);
        const profile = o.target === undefined ? undefined : targets.targetByName(o.target);
        // -O, else DST's extension, else the profile's format (which applyTarget then fills in itself)
        let profileChooses = false;
        // -n opens DST as -O says, else as its content says
        const format = o.skipCreate
          ? o.outputFormat === undefined
            ? (remote?.defaultFormat ?? '')
            : await formatArg(o.outputFormat, '-O')
          : await newImageFormat(o.outputFormat, target, '-O', profile && (async () => {
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
        const extra = parseCreateOptions(o.options);
        const options: ConvertOptions = {
          ...extra,
          ...withoutSnapshot(tuning),
          namespace: targetFiles,
          format: format || undefined,
          type: o.type ?? extra.type,
          compress: !!o.compress,
          adapterType: o.adapter ?? extra.adapterType,
          hwVersion: o.hw ?? extra.hwVersion,
          overwrite: o.overwrite,
          capacity: o.size === undefined ? undefined : num(o.size, '--size'),
          compressionLevel: o.compressionLevel === undefined ? undefined : Number(o.compressionLevel),
          sink,
          onProgress: progress?.update,
        };
        // --target: the profile fills in what -O/-t/-a/--hw left open, and rounds the size (docs/targets.md)
        // -t is checked against the format it is for: -O's (or the extension's), or with --target the profile's choice (below)
        if (!profile && format) {
          typeArg(driverByName(format), o.type, '-t');
          typeArg(driverByName(format), extra.type, '-o');
        }
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
          if (src === '-' || src.startsWith('-#')) {
            // a read from a pipe that waits for data would not see the abort: end the pipe
            cancel.signal.addEventListener('abort', () => process.stdin.destroy(), { once: true });
            // -#disk1.vmdk / -#1: a member of the tar archive (an OVA) arriving on stdin
            const member = src.startsWith('-#') ? src.slice(2) : undefined;
            const stdin = member === undefined ? process.stdin : (await import('../../ops/ova/stream.js')).tarMemberStream(process.stdin, member, '-');
            const input = await openSequentialInput(stdin as typeof process.stdin, { format: o.format, size: o.inputSize === undefined ? undefined : num(o.inputSize, '--input-size'), sizeField: '--input-size' });
            if (input.capacity === undefined) {
              if (!(toStdout && format === 'raw')) throw new UsageError('raw input from stdin needs --input-size SIZE (unless the output is raw to stdout)');
              await copyPieces(input, sink!);
            } else await ops.convert(Disk.from(new SequentialImage(input, input.capacity)), target, forTarget(input.capacity));
          } else {
            await withDisk(src, { readOnly: true, ...openOpts(o), snapshot: tuning.snapshot }, (d) => {
              if (o.bitmaps) checkBitmaps(d, format);
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
          const findings = await withDisk(target, { readOnly: true, singleLink: true, namespace: remote?.namespace }, (t) => targets.lint(t, profile));
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
