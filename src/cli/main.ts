/**
 * The `vdkit` command. Exit status: 0 success, 1 failure (the DiskError's code and text on
 * stderr), 2 wrong usage.
 */
import { createReadStream } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { DiskError, errorText, type ErrorCode } from '../core/errors.js';
import { SECTOR_SIZE, parseSize } from '../core/ints.js';
import { Disk, type DiskOpenOptions } from '../disk.js';
import type { CreateOptions } from '../formats/types.js';
import { convert, type ConvertOptions } from '../ops/convert.js';
import { copyPieces, openSequentialInput, SequentialImage } from '../ops/stream-in.js';
import { StreamSink } from '../storage/sink.js';
import { setCacheMode } from '../storage/cache-mode.js';
import { cloneChain } from '../ops/clone-chain.js';
import { compare } from '../ops/compare.js';
import { checksum } from '../ops/checksum.js';
import { checkDisk, openFindings } from '../ops/check.js';
import { backendInfo, detectFormat } from '../formats/registry.js';
import { createChild } from '../ops/child.js';
import { describeChain } from '../ops/chain-list.js';
import { commit, mergeIntoTop } from '../ops/commit.js';
import { rebase } from '../ops/rebase.js';
import { measure } from '../ops/measure.js';
import { TARGETS, accepted, applyTarget, lint, targetByName, type LintFinding, type TargetProfile } from '../ops/targets.js';
import { resize } from '../ops/resize.js';
import { rename, unlink } from '../ops/rename.js';
import { compact, defragment } from '../ops/compact.js';
import { discard } from '../ops/discard.js';
import { formatInfo, formatProperties, hexDump, humanBytes, progressBar } from './output.js';
import { parseGeometry, type DiskProperties } from '../ops/properties.js';
import { vdiskmanager } from './vdiskmanager.js';
import { registerServe } from './commands/serve.js';

class UsageError extends Error {}

/** qemu's names for formats that vdkit names otherwise */
const QEMU_FORMAT_NAMES: Record<string, string> = { vpc: 'vhd' };

/** qemu-img's -o spellings, onto CreateOptions */
function parseCreateOptions(list: string | undefined): Partial<CreateOptions> {
  const out: Partial<CreateOptions> = {};
  if (!list) return out;
  for (const item of list.split(',')) {
    const eq = item.indexOf('=');
    const key = (eq < 0 ? item : item.slice(0, eq)).trim();
    const value = eq < 0 ? 'on' : item.slice(eq + 1).trim();
    const flag = () => {
      if (!['on', 'off', 'true', 'false', '1', '0', 'yes', 'no'].includes(value)) throw new UsageError(`-o ${key}: expected on or off, got ${JSON.stringify(value)}`);
      return ['on', 'true', '1', 'yes'].includes(value);
    };
    switch (key) {
      case 'subformat':
      case 'type':
      case 'compat': // qcow2: 0.10 (version 2) or 1.1 (version 3)
        out.type = value;
        break;
      case 'adapter_type':
        out.adapterType = value;
        break;
      case 'hwversion':
        out.hwVersion = value;
        break;
      case 'cluster_size':
        out.clusterSize = num(value, '-o cluster_size');
        break;
      case 'block_size':
        out.blockSize = num(value, '-o block_size');
        break;
      case 'preallocation':
        if (!['off', 'full', 'falloc', 'metadata'].includes(value)) throw new UsageError(`-o preallocation: off or full, got ${JSON.stringify(value)}`);
        out.preallocate = value === 'full' || value === 'falloc';
        break;
      case 'force_size':
        out.chsRounding = !flag();
        break;
      default:
        throw new UsageError(`-o: unknown option ${JSON.stringify(key)} (known: subformat, compat, adapter_type, hwversion, cluster_size, block_size, preallocation, force_size)`);
    }
  }
  return out;
}

/** a command's exit status when it finished but wants to say more than success (check: 2, 3) */
let exitStatus = 0;

/** the open options every command that opens a disk shares */
function openOpts(o: { format?: string; allowExternalExtents?: boolean; untrusted?: boolean; singleLink?: boolean; force?: boolean; ignoreChecksums?: boolean }) {
  return { format: o.format, allowExternalExtents: o.allowExternalExtents, untrusted: o.untrusted, singleLink: o.singleLink, force: o.force, ignoreChecksums: o.ignoreChecksums };
}

function num(text: string, what: string): number {
  try {
    return parseSize(text);
  } catch {
    throw new UsageError(`${what}: expected a number (K/M/G/T suffixes allowed), got ${JSON.stringify(text)}`);
  }
}

function out(s: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(s, (err) => (err ? reject(err) : resolve())));
}

async function withDisk<T>(
  path: string,
  opts: DiskOpenOptions & { readOnly: boolean },
  fn: (d: Disk) => Promise<T>,
): Promise<T> {
  const d = await Disk.open(path, opts);
  try {
    return await fn(d);
  } finally {
    await d.close();
  }
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('vdkit')
    .description('Virtual disk development kit: create, inspect, read, write and convert VMDK and raw disk images')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  const formatOpt = () => new Option('-f, --format <fmt>', 'image format (detected from the content when omitted)');
  const external = () => new Option('--allow-external-extents', 'allow extent files outside the descriptor\'s folder (absolute paths, "..", devices)');
  const untrusted = () => new Option('--untrusted', 'refuse parent hints that are absolute or leave the child\'s folder');
  const singleLink = () => new Option('--single-link', 'open only this image, not its parents (unallocated ranges read as zeros)');
  const force = () => new Option('--force', 'write to a disk even though a child (redo log) depends on it');
  const withOptions = (cmd: Command, options: Option[]) => {
    for (const o of options) cmd.addOption(o);
    return cmd;
  };
  /** options of every command that opens a disk to read it */
  const ignoreChecksums = () => new Option('--ignore-checksums', 'open an image whose checksums do not match, read-only, to recover its data (VHD)');
  const readingOptions = () => [formatOpt(), untrusted(), singleLink(), external(), ignoreChecksums()];
  /** options of every command that opens a disk to change it */
  const writingOptions = () => [formatOpt(), untrusted(), force(), external()];

  program
    .command('create')
    .description('create a new disk (vmware-vdiskmanager -c / VixDiskLib_Create)')
    .addOption(new Option('-f, --format <fmt>', 'image format (see `vdkit formats`)').default('vmdk'))
    .option('-t, --type <type>', 'vmdk: monolithicSparse (0, default), twoGbMaxExtentSparse (1), monolithicFlat (2), twoGbMaxExtentFlat (3), vmfs (4), vmfsThin; other formats: see `vdkit formats`')
    .option('-a, --adapter <type>', 'ide, buslogic, lsilogic (default) or pvscsi')
    .option('--hw <version>', 'virtual hardware version written to ddb.virtualHWVersion (default 4)')
    .option('--thin', 'vmfs: mark the disk thin provisioned')
    .option('--preallocate', 'flat and fixed types: write zeros into the data files instead of leaving them sparse')
    .option('--chs-rounding', 'vhd: round the size up to a whole CHS geometry (Virtual PC; qemu-img without force_size)')
    .option('--overwrite', 'replace existing files')
    .option('-o, --options <list>', 'qemu-img style format options: subformat, adapter_type, hwversion, cluster_size, block_size, preallocation (key=value,...)')
    .option('-b, --backing <file>', 'create a child of this disk (qemu-img create -b); SIZE may then be omitted')
    .option('-F, --backing-format <fmt>', 'format of the backing file (detected when omitted)')
    .argument('<file>')
    .argument('[size]', 'bytes, or with a K/M/G/T suffix, or sectors with an s suffix (2048s)')
    .action(async (file: string, size: string | undefined, o) => {
      const extra = parseCreateOptions(o.options);
      const format = o.format;
      if (o.backing !== undefined) {
        if (o.backingFormat !== undefined) {
          const want = QEMU_FORMAT_NAMES[o.backingFormat] ?? o.backingFormat;
          const actual = (await detectFormat(o.backing)).name;
          if (actual !== want) throw new DiskError('INVAL', `backing file is ${actual}, not ${o.backingFormat}`, { path: o.backing, field: 'backing format' });
        }
        const d = await createChild(o.backing, file, {
          format,
          type: o.type ?? extra.type,
          capacity: size === undefined ? undefined : num(size, 'size'),
          overwrite: o.overwrite,
          createOptions: extra,
        });
        await d.close();
        await out(`created ${file}: ${d.format} ${d.type} child of ${o.backing}, ${d.capacity} bytes (${humanBytes(d.capacity)})\n`);
        return;
      }
      if (size === undefined) throw new UsageError('size: required unless -b BACKING is given');
      const d = await Disk.create(file, {
        format,
        capacity: num(size, 'size'),
        adapterType: o.adapter,
        hwVersion: o.hw,
        thin: o.thin,
        preallocate: o.preallocate,
        chsRounding: o.chsRounding,
        overwrite: o.overwrite,
        ...extra,
        type: o.type ?? extra.type,
      });
      await d.close();
      await out(`created ${file}: ${d.format} ${d.type}, ${d.capacity} bytes (${humanBytes(d.capacity)})\n`);
    });

  withOptions(program.command('info'), readingOptions())
    .description('show what a disk is (VixDiskLib_GetInfo, qemu-img info)')
    .option('--json', 'machine-readable output')
    .option('--descriptor', 'VMDK: also print the descriptor text')
    .option('--no-chain', 'inspect this image alone: its parent is not looked for or checked (VD_OPEN_FLAGS_INFO)')
    .argument('<file>')
    .action(async (file: string, o) => {
      await withDisk(file, { readOnly: true, ...openOpts(o), infoOnly: o.chain === false }, async (d) => {
        const info = await d.info();
        const properties = d.getProperties();
        if (o.json) await out(JSON.stringify({ ...info, path: file, properties }, (_k, v) => (v === undefined ? null : v), 2) + '\n');
        else await out(formatInfo(info) + formatProperties(properties));
        if (o.descriptor && 'descriptorText' in d.image) await out('\n' + (d.image as { descriptorText(): string }).descriptorText());
      });
    });

  withOptions(program.command('read'), readingOptions())
    .description('read bytes from the virtual disk to stdout (raw, or a hex dump like the VDDK sample\'s -dump)')
    .requiredOption('--offset <n>', 'byte offset')
    .requiredOption('--length <n>', 'number of bytes')
    .option('--hex', 'hex dump instead of raw bytes')
    .argument('<file>')
    .action(async (file: string, o) => {
      const offset = num(o.offset, '--offset');
      const length = num(o.length, '--length');
      await withDisk(file, { readOnly: true, ...openOpts(o) }, async (d) => {
        const step = 1024 * 1024;
        for (let at = 0; at < length; at += step) {
          const n = Math.min(step, length - at);
          const buf = await d.read(offset + at, n);
          await out(o.hex ? hexDump(buf, offset + at) : buf);
        }
      });
    });

  withOptions(program.command('write'), writingOptions())
    .description('write bytes from stdin (or --input FILE) into the virtual disk at --offset')
    .requiredOption('--offset <n>', 'byte offset')
    .option('--input <file>', 'read the data from this file instead of stdin')
    .argument('<file>')
    .action(async (file: string, o) => {
      const offset = num(o.offset, '--offset');
      await withDisk(file, { readOnly: false, ...openOpts(o) }, async (d) => {
        const input = o.input ? createReadStream(o.input, { highWaterMark: 1024 * 1024 }) : process.stdin;
        let at = offset;
        for await (const chunk of input) {
          const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
          await d.write(at, buf);
          at += buf.length;
        }
        await d.flush();
        process.stderr.write(`wrote ${at - offset} bytes at offset ${offset}\n`);
      });
    });

  withOptions(program.command('fill'), writingOptions())
    .description('fill sectors with one byte value (the VDDK sample\'s -fill)')
    .requiredOption('--start <sector>', 'first sector')
    .requiredOption('--count <n>', 'number of sectors', '1')
    .option('--value <byte>', 'byte value, decimal or 0x hex', '0xff')
    .argument('<file>')
    .action(async (file: string, o) => {
      const start = num(o.start, '--start');
      const count = num(o.count, '--count');
      const value = Number(o.value);
      if (!Number.isInteger(value) || value < 0 || value > 255) throw new UsageError(`--value: expected a byte 0..255, got ${JSON.stringify(o.value)}`);
      await withDisk(file, { readOnly: false, ...openOpts(o) }, async (d) => {
        const per = 2048; // sectors per write (1 MiB)
        const buf = Buffer.alloc(per * SECTOR_SIZE, value);
        for (let s = 0; s < count; s += per) {
          const n = Math.min(per, count - s);
          await d.writeSectors(start + s, buf.subarray(0, n * SECTOR_SIZE));
        }
        await d.flush();
      });
    });

  withOptions(program.command('meta'), writingOptions())
    .description('list, read or write metadata (the VMDK disk database; VixDiskLib_Read/WriteMetadata)')
    .option('--json', 'list as JSON')
    .argument('<file>')
    .argument('[key]')
    .argument('[value]')
    .action(async (file: string, key: string | undefined, value: string | undefined, o) => {
      await withDisk(file, { readOnly: value === undefined, ...openOpts(o) }, async (d) => {
        if (key === undefined) {
          const entries = d.metadataKeys().map((k) => [k, d.readMetadata(k) ?? ''] as const);
          if (o.json) await out(JSON.stringify(Object.fromEntries(entries), null, 2) + '\n');
          else await out(entries.map(([k, v]) => `${k} = ${v}\n`).join(''));
        } else if (value === undefined) {
          const v = d.readMetadata(key);
          if (v === undefined) throw new DiskError('INVAL', `no metadata key ${JSON.stringify(key)}`, { path: file, field: key });
          await out(v + '\n');
        } else {
          await d.writeMetadata(key, value);
        }
      });
    });

  withOptions(program.command('set'), [formatOpt(), untrusted(), external()])
    .description('change UUIDs, comment, geometry or adapter type (VDSetUuid, VDSetComment, VDSetPCHSGeometry, ...)')
    .option('--uuid <uuid>', 'the image UUID ("new" for a random one)')
    .option('--modification-uuid <uuid>', 'the modification UUID (VDI, VMDK as VirtualBox writes it)')
    .option('--parent-uuid <uuid>', 'the parent UUID a child records')
    .option('--parent-modification-uuid <uuid>', 'the parent\'s modification UUID a child records')
    .option('--comment <text>', 'the comment (VDI, VMDK as VirtualBox writes it)')
    .option('--geometry <c/h/s>', 'the physical CHS geometry (VMDK, VHD)')
    .option('--bios-geometry <c/h/s>', 'the logical (BIOS) CHS geometry (VMDK, VDI)')
    .option('--adapter <type>', 'the adapter type (VMDK: ide, buslogic, lsilogic, legacyESX, ...)')
    .option('--force', 'change the UUID even though a child depends on this disk')
    .argument('<file>')
    .action(async (file: string, o) => {
      const props: DiskProperties = {
        uuid: o.uuid,
        modificationUuid: o.modificationUuid,
        parentUuid: o.parentUuid,
        parentModificationUuid: o.parentModificationUuid,
        comment: o.comment,
        pchs: o.geometry === undefined ? undefined : parseGeometry(o.geometry, file, 'geometry'),
        lchs: o.biosGeometry === undefined ? undefined : parseGeometry(o.biosGeometry, file, 'bios-geometry'),
        adapterType: o.adapter,
      };
      if (Object.values(props).every((v) => v === undefined)) throw new UsageError('set: give at least one of --uuid, --modification-uuid, --parent-uuid, --parent-modification-uuid, --comment, --geometry, --bios-geometry, --adapter');
      // the open itself is forced: only a new uuid can break a child, and setProperties checks that
      await withDisk(file, { readOnly: false, ...openOpts(o), force: true }, async (d) => {
        await d.setProperties(props, { force: !!o.force });
        await out(formatProperties(d.getProperties()));
      });
    });

  withOptions(program.command('map'), readingOptions())
    .description('list data / zero / unallocated ranges of the disk (qemu-img map)')
    .option('--json', 'machine-readable output')
    .option('--all', 'also list zero and unallocated ranges')
    .argument('<file>')
    .action(async (file: string, o) => {
      await withDisk(file, { readOnly: true, ...openOpts(o) }, async (d) => {
        const ranges = await d.blockStatus();
        if (o.json) {
          await out(JSON.stringify(ranges) + '\n');
          return;
        }
        const shown = o.all ? ranges : ranges.filter((r) => r.state === 'data');
        await out(`${'offset'.padEnd(18)}${'length'.padEnd(18)}state\n`);
        await out(shown.map((r) => `0x${r.offset.toString(16).padEnd(16)}0x${r.length.toString(16).padEnd(16)}${r.state}\n`).join(''));
      });
    });

  withOptions(program.command('convert'), readingOptions())
    .alias('clone')
    .description('copy a disk into a new image, converting format and type (qemu-img convert, vmware-vdiskmanager -r); "-" as SRC reads raw or streamOptimized from stdin, "-" as DST writes raw or streamOptimized to stdout')
    .addOption(new Option('-O, --output-format <fmt>', 'target format (see `vdkit formats`)').default('vmdk'))
    .option('-t, --type <type>', 'target type (VMDK createType or 0-5; streamOptimized is 5)')
    .option('-a, --adapter <type>', 'target adapter type')
    .option('--hw <version>', 'target virtual hardware version')
    .option('-p, --progress', 'show a progress bar on a terminal')
    .option('--json-progress', 'print one JSON line per progress update to stderr, for scripts')
    .option('--overwrite', 'replace an existing target')
    .option('--compression-level <n>', 'streamOptimized: zlib level 1 (fastest, as VMware writes; default) to 9 (smallest)')
    .option('--stream-name <name>', 'streamOptimized to stdout: the file name recorded in the stream (default disk.vmdk)')
    .option('--input-size <size>', 'raw from stdin: its size (needed unless the output is raw to stdout)')
    .option('--size <size>', 'target size (K/M/G/T suffixes): smaller drops the end, larger adds zeros')
    .option('--keep-chain', 'copy a chain link by link into a new chain (lower links: <dst stem>-base.ext, -base-000001.ext, ...)')
    .option('--from <n>', 'with --keep-chain: first link kept as a link, 0 = the base; links below are flattened into the new base')
    .option('--to <n>', 'with --keep-chain: last link copied, 0 = the base (default: the top)')
    .addOption(new Option('--cache <mode>', 'writeback: the target is on the disk (fdatasync) before it gets its name; unsafe: no fdatasync, as qemu-img convert does by default (faster; a host crash soon after can lose the output)').choices(['writeback', 'unsafe']).default('writeback'))
    .option('--target <t>', `make what a target takes (${Object.keys(TARGETS).join(', ')}): format, type, adapter, versions, size rounding; -O/-t/-a/--hw override it (docs/targets.md)`)
    .argument('<src>')
    .argument('<dst>')
    .action(async (src: string, dst: string, o, cmd: Command) => {
      const started = Date.now();
      const tty = !!o.progress && process.stderr.isTTY;
      let lastDraw = 0;
      setCacheMode(o.cache);
      const link = (v: string | undefined, what: string) => {
        if (v === undefined) return undefined;
        if (!o.keepChain) throw new UsageError(`${what} needs --keep-chain`);
        if (!/^\d+$/.test(v)) throw new UsageError(`${what}: expected a link number (0 = the base), got ${JSON.stringify(v)}`);
        return Number(v);
      };
      const from = link(o.from, '--from');
      const to = link(o.to, '--to');
      if (o.keepChain && (src === '-' || dst === '-')) throw new UsageError('--keep-chain needs files, not pipes');
      const format = QEMU_FORMAT_NAMES[o.outputFormat] ?? o.outputFormat;
      const toStdout = dst === '-';
      if (toStdout && process.stdout.isTTY) throw new UsageError('refusing to write a disk image to a terminal; redirect stdout or give a file name');
      const sink = toStdout ? new StreamSink('-', process.stdout) : undefined;
      const options: ConvertOptions = {
        format,
        type: o.type,
        adapterType: o.adapter,
        hwVersion: o.hw,
        overwrite: o.overwrite,
        capacity: o.size === undefined ? undefined : num(o.size, '--size'),
        compressionLevel: o.compressionLevel === undefined ? undefined : Number(o.compressionLevel),
        sink,
        onProgress:
          tty || o.jsonProgress
            ? (p) => {
                const now = Date.now();
                if (now - lastDraw < 100 && p.done < p.total) return;
                lastDraw = now;
                if (o.jsonProgress) {
                  const seconds = (now - started) / 1000;
                  process.stderr.write(JSON.stringify({ done: p.done, total: p.total, written: p.written, percent: p.total ? (100 * p.done) / p.total : 100, bytesPerSecond: seconds > 0 ? Math.round(p.done / seconds) : 0 }) + '\n');
                } else process.stderr.write(`\r${progressBar(p.done, p.total, started)}`);
              }
            : undefined,
      };
      // --target: the profile fills in what -O/-t/-a/--hw left open, and rounds the size (docs/targets.md)
      const profile = o.target === undefined ? undefined : targetByName(o.target);
      const forTarget = (capacity: number): ConvertOptions => {
        if (!profile) return options;
        const explicitFormat = cmd.getOptionValueSource('outputFormat') === 'default' ? undefined : format;
        const applied = applyTarget(profile, { ...options, format: explicitFormat }, capacity);
        process.stderr.write(`target ${profile.name} (${profile.title}): ${applied.choices.join('; ') || 'nothing to choose'}\n`);
        for (const c of applied.conflicts) process.stderr.write(`${c.severity}: ${c.message}${c.fix ? ` (${c.fix})` : ''}\n`);
        return applied.options;
      };
      const target = toStdout ? (o.streamName ?? 'disk.vmdk') : dst;
      if (src === '-') {
        const input = await openSequentialInput(process.stdin, { format: o.format, size: o.inputSize === undefined ? undefined : num(o.inputSize, '--input-size') });
        if (input.capacity === undefined) {
          if (!(toStdout && format === 'raw')) throw new UsageError('raw input from stdin needs --input-size SIZE (unless the output is raw to stdout)');
          await copyPieces(input, sink!);
        } else await convert(Disk.from(new SequentialImage(input, input.capacity)), target, forTarget(input.capacity));
      } else {
        await withDisk(src, { readOnly: true, ...openOpts(o) }, (d) => {
          const x = forTarget(options.capacity ?? d.capacity);
          return o.keepChain ? cloneChain(d, target, { ...x, from, to }) : convert(d, target, x);
        });
      }
      if (tty) process.stderr.write('\n');
      if (profile && !toStdout) {
        // check the result the way `vdkit lint --target` would
        const findings = await withDisk(dst, { readOnly: true, singleLink: true }, (t) => lint(t, profile));
        for (const f of findings) process.stderr.write(`${f.severity}: ${f.field}: ${f.message}\n`);
        process.stderr.write(accepted(findings) ? `${dst}: nothing blocks ${profile.name}\n` : `${dst}: ${profile.name} would refuse it\n`);
      }
    });

  withOptions(program.command('measure'), readingOptions())
    .description('bytes a new image will take, for a source disk or a bare size (qemu-img measure, VixDiskLib_SpaceNeededForClone)')
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
      const target = {
        ...extra,
        format: QEMU_FORMAT_NAMES[o.outputFormat] ?? o.outputFormat,
        type: o.type ?? extra.type,
        capacity: o.size === undefined ? undefined : num(o.size, '--size'),
        detectZeroes: !!o.detectZeroes,
      };
      const r = file === undefined ? await measure(undefined, target) : await withDisk(file, { readOnly: true, ...openOpts(o) }, (d) => measure(d, target));
      if (o.json) await out(JSON.stringify({ required: r.required, 'fully-allocated': r.fullyAllocated, capacity: r.capacity, notes: r.notes }, null, 2) + '\n');
      else await out(`required size: ${r.required}\nfully allocated size: ${r.fullyAllocated}\n`);
      if (!o.json) for (const n of r.notes) process.stderr.write(`note: ${n}\n`);
    });

  withOptions(program.command('lint'), [formatOpt(), untrusted(), external()])
    .description('explain what an image lacks for a target (docs/targets.md): exit 0 nothing blocks, 1 the target would refuse it, 2 error')
    .requiredOption('--target <t>', Object.keys(TARGETS).join(', '))
    .option('--json', 'machine-readable findings')
    .argument('<file>')
    .action(async (file: string, o) => {
      let profile: TargetProfile;
      let findings: LintFinding[];
      try {
        profile = targetByName(o.target);
        // the image's own structure is what a target sees; a parent is reported, not opened
        findings = await withDisk(file, { readOnly: true, ...openOpts(o), singleLink: true }, (d) => lint(d, profile));
      } catch (err) {
        if (!(err instanceof DiskError)) throw err;
        process.stderr.write(`vdkit: ${err.code} (${err.number}): ${err.message}\n`);
        exitStatus = 2; // 1 means "the target would refuse it"
        return;
      }
      const ok = accepted(findings);
      if (o.json) await out(JSON.stringify({ target: profile.name, accepted: ok, findings }, null, 2) + '\n');
      else {
        for (const f of findings) await out(`${f.severity}: ${f.field}: ${f.message}${f.fix ? `\n  fix: ${f.fix}` : ''}\n`);
        await out(ok ? `${file}: nothing blocks ${profile.name} (${profile.title})\n` : `${file}: ${profile.name} would refuse it\n`);
      }
      if (!ok) exitStatus = 1;
    });

  withOptions(program.command('check'), [formatOpt(), untrusted(), external()])
    .description('check a disk and its chain for corruptions and leaks (qemu-img check, VDRepair, VixDiskLib_CheckRepair); exit 0 clean, 2 corruptions, 3 leaks only, 1 could not check')
    .option('-r, --repair', 'repair what can be repaired (opens the disk read-write)')
    .option('-n, --dry-run', 'with --repair: say what a repair would change, change nothing')
    .option('--json', 'machine-readable report')
    .argument('<file>')
    .action(async (file: string, o) => {
      if (o.dryRun && !o.repair) throw new UsageError('--dry-run goes with --repair');
      const report = await checkDisk(file, { ...openOpts(o), repair: !!o.repair, dryRun: !!o.dryRun });
      const { corruptions, leaks } = openFindings(report);
      if (o.json) await out(JSON.stringify(report, null, 2) + '\n');
      else {
        for (const r of [report, ...(report.links ?? [])]) {
          const prefix = r === report ? '' : `${r.path}: `;
          for (const f of r.findings) {
            const label = f.repaired ? 'Repaired' : f.wouldRepair ? 'Would repair' : f.kind === 'corruption' ? 'ERROR' : f.kind === 'leak' ? 'Leaked' : 'Warning';
            await out(`${label}: ${prefix}${f.message}${f.field ? ` (${[f.struct, f.field].filter(Boolean).join('.')})` : ''}\n`);
          }
        }
        await out(corruptions === 0 && leaks === 0 ? 'No errors were found on the image.\n' : `${corruptions} errors and ${leaks} leaks were found on the image${report.dryRun ? ' (dry run: nothing was changed)' : ''}.\n`);
      }
      if (corruptions > 0) exitStatus = 2;
      else if (leaks > 0) exitStatus = 3;
    });

  program
    .command('compare')
    .description('compare the content of two disks of any formats (qemu-img compare): exit 0 identical, 1 different, 2 error')
    .option('-f, --format <fmt>', 'format of the first disk (detected when omitted)')
    .option('-F, --second-format <fmt>', 'format of the second disk (detected when omitted)')
    .option('-s, --strict', 'also fail on different sizes or allocation')
    .addOption(untrusted())
    .argument('<a>')
    .argument('<b>')
    .action(async (a: string, b: string, o) => {
      try {
        const da = await Disk.open(a, { readOnly: true, format: o.format ? (QEMU_FORMAT_NAMES[o.format] ?? o.format) : undefined, untrusted: o.untrusted });
        try {
          const db = await Disk.open(b, { readOnly: true, format: o.secondFormat ? (QEMU_FORMAT_NAMES[o.secondFormat] ?? o.secondFormat) : undefined, untrusted: o.untrusted });
          try {
            const r = await compare(da, db, { strict: o.strict });
            if (r.identical) await out('Images are identical.\n');
            else {
              await out(`Content mismatch at offset ${r.offset}! (${r.reason})\n`);
              exitStatus = 1;
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
        exitStatus = 2; // qemu-img compare: 2 means the comparison itself failed
      }
    });

  withOptions(program.command('checksum'), readingOptions())
    .description('one digest of the disk content, the same in every format, type and chain')
    .argument('<file>')
    .action(async (file: string, o) => {
      await withDisk(file, { readOnly: true, ...openOpts(o) }, async (d) => {
        await out(`${await checksum(d)}  ${file}\n`);
      });
    });

  program
    .command('formats')
    .description('list the formats vdkit handles and what each can do (VDBackendInfo)')
    .option('--json', 'machine-readable output')
    .action(async (o) => {
      const list = backendInfo();
      if (o.json) {
        await out(JSON.stringify(list, null, 2) + '\n');
        return;
      }
      for (const b of list) {
        const c = b.capabilities;
        const can = [
          c.write === 'native' ? 'write' : 'read-only',
          c.differencing ? 'differencing' : '',
          c.split ? 'split' : '',
          c.discard !== 'none' ? 'discard' : '',
          c.compact !== 'none' ? 'compact' : '',
          c.defragment !== 'none' ? 'defrag' : '',
          c.resize !== 'none' ? `resize (${c.resize})` : '',
          c.metadata ? 'metadata' : '',
        ].filter(Boolean);
        await out(`${b.name.padEnd(6)} ${b.description}\n       files: ${b.extensions.map((e) => `.${e}`).join(' ')}; types: ${c.createTypes.join(', ')}; ${can.join(', ')}\n`);
        for (const opt of b.createOptions) await out(`       create option ${opt.name}: ${opt.description}\n`);
      }
    });

  program
    .command('child')
    .alias('redo')
    .description('create a child (redo log / snapshot delta) of a disk (VixDiskLib_CreateChild, the VDDK sample\'s -redo)')
    .option('-t, --type <type>', 'monolithicSparse (default) or twoGbMaxExtentSparse')
    .option('--absolute-hint', 'record the parent as an absolute path')
    .option('--overwrite', 'replace existing files')
    .addOption(untrusted())
    .argument('<parent>')
    .argument('[child]', 'default: VMware naming, <parent>-000001.vmdk (the first free number)')
    .action(async (parent: string, child: string | undefined, o) => {
      const d = await createChild(parent, child, { type: o.type, overwrite: o.overwrite, absoluteHint: o.absoluteHint, untrusted: o.untrusted });
      const info = await d.info();
      await d.close();
      await out(`created ${d.path}: child of ${parent} (${info.numLinks} links, parent ${d.format === 'vmdk' ? 'CID' : 'id'} ${d.image.backing()?.parentId ?? '-'})\n`);
    });

  program
    .command('attach')
    .description('attach a new child to any generation of a chain, even one that already has children (VixDiskLib_Attach)')
    .option('-t, --type <type>', 'monolithicSparse (default) or twoGbMaxExtentSparse')
    .option('--overwrite', 'replace existing files')
    .addOption(untrusted())
    .argument('<parent>')
    .argument('<child>')
    .action(async (parent: string, child: string, o) => {
      const d = await createChild(parent, child, { type: o.type, overwrite: o.overwrite, untrusted: o.untrusted });
      const info = await d.info();
      await d.close();
      await out(`attached ${d.path} to ${parent} (${info.numLinks} links)\n`);
    });

  program
    .command('commit')
    .description('fold a child into its parent (or the links down to --base), or with --into-top pull parents into the child (qemu-img commit, VDMerge)')
    .option('-b, --base <file>', 'the link to commit into (default: the parent); with --into-top, the link that becomes the parent')
    .option('--drop', 'remove the top after committing (default: keep it as an empty child)')
    .option('--into-top', 'merge the parents into the top instead (the other direction)')
    .option('--all', 'with --into-top: merge every parent, making the top a standalone disk')
    .option('--force', 'commit even though the base has other children')
    .option('-p, --progress', 'show a progress bar on a terminal')
    .addOption(untrusted())
    .argument('<top>')
    .action(async (top: string, o) => {
      const started = Date.now();
      const tty = !!o.progress && process.stderr.isTTY;
      const onProgress = tty ? (p: { done: number; total: number }) => process.stderr.write(`\r${progressBar(p.done, p.total, started)}`) : undefined;
      if (o.intoTop) {
        const r = await mergeIntoTop(top, { base: o.base, all: o.all, untrusted: o.untrusted, onProgress });
        if (tty) process.stderr.write('\n');
        await out(`merged ${humanBytes(r.bytesCopied)} into ${top}; its parent is now ${r.parent ?? 'none (standalone disk)'}\n`);
      } else {
        const r = await commit(top, { base: o.base, drop: o.drop, force: o.force, untrusted: o.untrusted, onProgress });
        if (tty) process.stderr.write('\n');
        await out(`committed ${humanBytes(r.bytesCopied)} into ${r.base}\n`);
      }
    });

  program
    .command('rebase')
    .description('point a child at another parent, copying what differs (qemu-img rebase); --unsafe only rewrites the link (repair)')
    .requiredOption('-b, --backing <file>', 'the new parent ("" for none: the child becomes a standalone disk)')
    .option('-u, --unsafe', 'rewrite the parent hint and CID only (repair a link after the parent moved or its CID changed)')
    .addOption(untrusted())
    .argument('<file>')
    .action(async (file: string, o) => {
      const r = await rebase(file, o.backing === '' ? undefined : o.backing, { unsafe: o.unsafe, untrusted: o.untrusted });
      await out(`${file} now has parent ${o.backing === '' ? 'none' : o.backing}${o.unsafe ? '' : ` (${humanBytes(r.bytesCopied)} copied)`}\n`);
    });

  program
    .command('resize')
    .description('grow (or with --shrink, shrink) the virtual size in place (qemu-img resize, vmware-vdiskmanager -x); SIZE, +SIZE or -SIZE (after --)')
    .option('--shrink', 'allow a smaller size')
    .option('--force', 'with --shrink: cut off data beyond the new end')
    .addOption(formatOpt())
    .argument('<file>')
    .argument('<size>')
    .action(async (file: string, size: string, o) => {
      const sign = size[0] === '+' ? 1 : size[0] === '-' ? -1 : 0;
      let n: number;
      try {
        n = parseSize(sign ? size.slice(1) : size);
      } catch {
        throw new UsageError(`resize: bad size ${JSON.stringify(size)}`);
      }
      const r = await resize(file, sign === 0 ? n : sign * n, { relative: sign !== 0, shrink: o.shrink, force: o.force, format: o.format });
      await out(`${file}: ${humanBytes(r.oldCapacity)} -> ${humanBytes(r.newCapacity)} (${r.newCapacity} bytes)\n`);
    });

  const inPlaceCommand = (name: 'compact' | 'defrag', description: string, op: typeof compact) =>
    program
      .command(name)
      .description(description)
      .option('-p, --progress', 'show a progress bar on a terminal')
      .addOption(formatOpt())
      .argument('<file>')
      .action(async (file: string, o) => {
        const started = Date.now();
        const tty = !!o.progress && process.stderr.isTTY;
        let lastDraw = 0;
        const onProgress = tty
          ? (done: number, total: number) => {
              const now = Date.now();
              if (now - lastDraw < 100 && done < total) return;
              lastDraw = now;
              process.stderr.write(`\r${progressBar(done, total, started)}`);
            }
          : undefined;
        const r = await op(file, { format: o.format, onProgress });
        if (tty) process.stderr.write('\n');
        const saved = r.fileBytesBefore - r.fileBytesAfter;
        const moved = r.moved === undefined ? '' : `, ${r.moved} data block${r.moved === 1 ? '' : 's'} moved${name === 'defrag' && r.moved === 0 ? ' (already in virtual order)' : ''}`;
        await out(`${file}: ${humanBytes(r.fileBytesBefore)} -> ${humanBytes(r.fileBytesAfter)}${saved > 0 ? ` (${humanBytes(saved)} given back)` : ''}${moved}\n`);
      });
  inPlaceCommand('compact', 'give back the space of grains/blocks that read as zeros or were discarded, in place (vmware-vdiskmanager -k, VixDiskLib_Shrink, VBoxManage modifymedium --compact)', compact);
  inPlaceCommand('defrag', 'put grains/blocks in virtual order in the file(s), in place (vmware-vdiskmanager -d, VixDiskLib_Defragment)', defragment).alias('defragment');

  program
    .command('discard')
    .description('mark a byte range unused (TRIM, VDDiscardRanges): it reads zeros afterwards; whole grains/blocks are freed where the format can')
    .requiredOption('--offset <bytes>', 'start of the range (K/M/G suffixes allowed)')
    .requiredOption('--length <bytes>', 'length of the range')
    .option('--force', 'discard even though a child depends on this disk')
    .addOption(formatOpt())
    .addOption(untrusted())
    .argument('<file>')
    .action(async (file: string, o) => {
      const offset = num(o.offset, '--offset');
      const length = num(o.length, '--length');
      const r = await discard(file, offset, length, { format: o.format, force: o.force, untrusted: o.untrusted });
      await out(`${file}: discarded ${humanBytes(length)} at ${offset} (${humanBytes(r.unitBytes)} freed as whole units, ${humanBytes(r.zeroedBytes)} written as zeros)\n`);
    });

  program
    .command('rename')
    .description('rename every file of a disk, rewriting extent names and the parent hints of its children (vmware-vdiskmanager -n)')
    .argument('<old>')
    .argument('<new>')
    .action(async (from: string, to: string) => {
      const r = await rename(from, to);
      await out(`${from} -> ${to}${r.children.length ? ` (${r.children.length} child${r.children.length > 1 ? 'ren' : ''} re-pointed)` : ''}\n`);
    });

  program
    .command('delete')
    .description('delete every file of a disk (VixDiskLib_Unlink); refused when a child depends on it unless --force')
    .option('--force', 'delete even though children depend on it')
    .argument('<file>')
    .action(async (file: string, o) => {
      const r = await unlink(file, { force: o.force });
      await out(`removed ${r.removed.join(', ')}\n`);
    });

  program
    .command('chain')
    .description('list the links of a chain, top to bottom, with CIDs, parent hints, sizes and any break')
    .option('--json', 'machine-readable output')
    .addOption(untrusted())
    .argument('<file>')
    .action(async (file: string, o) => {
      const c = await describeChain(file, { untrusted: o.untrusted });
      if (o.json) {
        await out(JSON.stringify({ links: c.links, break: c.break ?? null }, (_k, v) => (v === undefined ? null : v), 2) + '\n');
      } else {
        const rows = c.links.map((l, i) => {
          const idName = l.format === 'vmdk' ? 'CID' : 'id';
          const parent = !l.hasParent ? 'base' : `parent ${l.parentHint ? `"${l.parentHint}"` : '(found by id)'} (parent ${idName} ${l.parentCid ?? '-'})`;
          return `${String(i + 1).padStart(3)}  ${l.path}\n     ${l.format} ${l.type}, ${humanBytes(l.capacity)}, ${idName} ${l.cid ?? '-'}, ${humanBytes(l.allocatedBytes)} allocated, ${humanBytes(l.fileSize)} on file; ${parent}\n`;
        });
        await out(rows.join(''));
        if (c.break) await out(`BROKEN below ${c.break.at}: ${c.break.code}: ${c.break.reason}\n`);
      }
      if (c.break) throw new DiskError(c.break.code as ErrorCode, c.break.reason);
    });

  program
    .command('vdiskmanager')
    .description('vmware-vdiskmanager\'s own options (-c -s -a -t, -r, -x, -d, -k, -n, -R, -e, -q) for scripts written against it')
    .helpOption(false)
    .allowUnknownOption()
    .argument('[args...]')
    .action(async (args: string[]) => {
      exitStatus = await vdiskmanager(args);
    });

  registerServe(program, (code) => (exitStatus = code));

  return program;
}

/** Run the CLI; resolves to the exit status. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  // vmware-vdiskmanager's single-letter options are parsed by its own parser, not commander's
  if (argv[0] === 'vdiskmanager') return vdiskmanager(argv.slice(1));
  try {
    exitStatus = 0;
    await program.parseAsync(argv, { from: 'user' });
    return exitStatus;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return 2;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`vdkit: ${err.message}\n`);
      return 2;
    }
    if (err instanceof DiskError) {
      process.stderr.write(`vdkit: ${err.code} (${err.number}): ${err.message}\n`);
      if (!err.message.includes(errorText(err.code))) process.stderr.write(`  ${errorText(err.code)}\n`);
      return 1;
    }
    process.stderr.write(`vdkit: INTERNAL: ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}
