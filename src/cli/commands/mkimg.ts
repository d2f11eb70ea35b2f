/**
 * `vdkit mkimg`: a partitioned disk image built straight into any format, with FreeBSD mkimg's
 * spellings (-s scheme, -p TYPE[/LABEL]:=FILE | ::SIZE | :-COMMAND | -, -b, -a, -S, -P, -H,
 * -T, -c, -C, -f, -o; the image goes to stdout without -o, for raw and streamOptimized VMDK).
 */
import type { MkimgPartition, PartitionContents } from '../../ops/mkimg/mkimg.js';
import { cancellable, type CliCommand } from '../command.js';
import { UsageError, num } from '../options.js';
import { humanBytes, out } from '../output.js';
import { progressFromOptions } from '../progress.js';

/** one -p, as written: TYPE[/LABEL] and how its contents are given, or a skipped entry */
export type PartitionSpec = 'skip' | { type: string; label?: string; contents: { kind: 'file'; path: string } | { kind: 'size'; size: number } | { kind: 'command'; command: string } };

/** mkimg's -p grammar: `-` | TYPE[/LABEL]:=FILE | TYPE[/LABEL]::SIZE | TYPE[/LABEL]:-COMMAND */
export function parsePartitionSpec(spec: string): PartitionSpec {
  if (spec === '-') return 'skip';
  const colon = spec.indexOf(':');
  const how = colon < 0 ? undefined : spec[colon + 1];
  const rest = spec.slice(colon + 2);
  if (colon <= 0 || (how !== '=' && how !== ':' && how !== '-') || rest === '') {
    throw new UsageError(`-p ${JSON.stringify(spec)}: expected TYPE[/LABEL]:=FILE, TYPE[/LABEL]::SIZE, TYPE[/LABEL]:-COMMAND or - (an empty entry)`);
  }
  const head = spec.slice(0, colon);
  const slash = head.indexOf('/');
  const type = slash < 0 ? head : head.slice(0, slash);
  const label = slash < 0 ? undefined : head.slice(slash + 1);
  if (type === '') throw new UsageError(`-p ${JSON.stringify(spec)}: no partition type before the label`);
  if (how === '=') return { type, label, contents: { kind: 'file', path: rest } };
  if (how === ':') return { type, label, contents: { kind: 'size', size: num(rest, `-p ${type}::SIZE`) } };
  return { type, label, contents: { kind: 'command', command: rest } };
}

function whole(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) throw new UsageError(`${flag}: expected a whole number, got ${JSON.stringify(text)}`);
  return Number(text);
}

export const mkimg: CliCommand = {
  name: 'mkimg',
  summary: 'build a partitioned disk image (mbr, ebr, gpt) from partition contents straight into any format (FreeBSD mkimg)',
  define: (cmd) =>
    cmd
      .requiredOption('-s, --scheme <scheme>', 'partitioning scheme: mbr, ebr (an MBR whose partitions are logical ones in an extended partition) or gpt')
      .option('-p, --partition <spec>', 'a partition, in table order (repeat): TYPE[/LABEL]:=FILE (a file\'s bytes, or any disk image vdkit reads), TYPE[/LABEL]::SIZE (empty), TYPE[/LABEL]:-COMMAND (a command\'s output), or - (leave the entry empty); TYPE: efi, freebsd, freebsd-boot, freebsd-ufs, freebsd-swap, freebsd-zfs, linux-data, linux-swap, linux-lvm, linux-raid, ms-basic-data, ms-reserved, fat16b, fat32, fat32lba, ntfs, bios-boot, mbr, prepboot, ..., an MBR id (0x83) or a GPT type GUID; LABEL: GPT only', (v: string, prev: string[] = []) => [...prev, v])
      .option('-b, --bootcode <file>', 'boot code for sector 0 (its first 446 bytes; GPT: the protective MBR, marked active as mkimg does)')
      .option('-a, --active <n>', 'mark partition N (counting -p entries from 1) active (MBR) / legacy BIOS bootable (GPT)')
      .option('-S, --sector-size <n>', 'logical sector size: 512 (default) or 4096')
      .option('-P, --physical-sector-size <n>', 'physical sector size: partition sizes round up to it and starts align to it')
      .option('-H, --heads <n>', 'heads per cylinder for the MBR\'s CHS fields (default 255)')
      .option('-T, --track-sectors <n>', 'sectors per track for the MBR\'s CHS fields (default 63)')
      .option('-c, --capacity <size>', 'the disk is at least this big: it grows past the last partition (K/M/G/T suffixes)')
      .option('-C, --max-capacity <size>', 'the disk is at most this big: partitions that do not fit are an error')
      .option('--align <size>', 'partition starts are multiples of this (default 1M)')
      .option('-f, --image-format <fmt>', 'output format: raw (default), vmdk, vhd, vhdf (fixed VHD), vhdx, vdi, qcow2')
      .option('-t, --type <type>', 'the format\'s type: VMDK createType (monolithicSparse, streamOptimized, ...), VHD/VHDX/VDI fixed or dynamic')
      .option('-o, --output <file>', 'the image file; without it the image goes to stdout (raw and streamOptimized vmdk)')
      .option('--disk-id <id>', 'MBR disk signature (8 hex digits) or GPT disk GUID (default: the boot code\'s / random)')
      .option('--overwrite', 'replace an existing output file')
      .option('--progress', 'show progress on stderr')
      .option('--json', 'print the layout as JSON (to stderr when the image goes to stdout)')
      .option('-v, --verbose', 'print the layout (to stderr when the image goes to stdout)')
      .action(async (o) => {
        const specs = ((o.partition as string[] | undefined) ?? []).map(parsePartitionSpec);
        if (specs.length === 0) throw new UsageError('-p: give at least one partition');
        const scheme = String(o.scheme).toLowerCase();
        if (!['mbr', 'ebr', 'gpt'].includes(scheme)) throw new UsageError(`-s: unknown scheme ${JSON.stringify(o.scheme)} (known: mbr, ebr, gpt)`);
        const [{ mkimg: build, mkimgFormat }, { detectFormat }, { StreamSink }, { driverByName }] = await Promise.all([import('../../ops/mkimg/mkimg.js'), import('../../disk.js'), import('../../storage/sink.js'), import('../../formats/registry.js')]);
        let target: { format: string; type?: string };
        try {
          target = mkimgFormat(o.imageFormat ?? 'raw', o.type);
        } catch {
          throw new UsageError(`-f: unknown format ${JSON.stringify(o.imageFormat)} (known: raw, vmdk, vhd, vhdf, vhdx, vdi, qcow2)`);
        }
        const driver = driverByName(target.format);
        if (target.type !== undefined) {
          const known = [...driver.capabilities.createTypes, ...driver.sequentialTypes];
          if (!known.includes(driver.normaliseType(target.type))) throw new UsageError(`-t: unknown ${target.format} type ${JSON.stringify(target.type)} (known: ${known.join(', ')})`);
        }
        const toStdout = o.output === undefined || o.output === '-';
        const stream = target.format === 'raw' || (target.type !== undefined && driver.sequentialTypes.includes(driver.normaliseType(target.type)));
        if (toStdout && !stream) throw new UsageError(`-o: ${target.format}${target.type ? ` ${target.type}` : ''} cannot be written to stdout (raw and -f vmdk -t streamOptimized can): give -o FILE`);
        if (toStdout && process.stdout.isTTY) throw new UsageError('refusing to write a disk image to a terminal; redirect stdout or give -o FILE');
        const partitions: (MkimgPartition | 'skip')[] = [];
        for (const s of specs) {
          if (s === 'skip') {
            partitions.push('skip' as const);
            continue;
          }
          let contents: PartitionContents;
          if (s.contents.kind === 'size') contents = { size: s.contents.size };
          else if (s.contents.kind === 'command') contents = { command: s.contents.command };
          // a file is its bytes, unless it is a disk image vdkit reads: then its virtual disk (a qcow2 of a filesystem)
          else contents = (await detectFormat(s.contents.path)).name === 'raw' ? { file: s.contents.path } : { image: s.contents.path };
          partitions.push({ type: s.type, label: s.label, contents });
        }
        const progress = progressFromOptions(o);
        const sink = toStdout ? new StreamSink('-', process.stdout) : undefined;
        const output = toStdout ? 'disk.vmdk' : (o.output as string);
        const r = await cancellable((signal) =>
          build({
            scheme: scheme as 'mbr' | 'ebr' | 'gpt',
            partitions,
            bootcode: o.bootcode === undefined ? undefined : { file: o.bootcode },
            active: whole(o.active, '-a'),
            sectorSize: whole(o.sectorSize, '-S'),
            physicalSectorSize: whole(o.physicalSectorSize, '-P'),
            heads: whole(o.heads, '-H'),
            sectorsPerTrack: whole(o.trackSectors, '-T'),
            capacity: o.capacity === undefined ? undefined : num(o.capacity, '-c'),
            maxCapacity: o.maxCapacity === undefined ? undefined : num(o.maxCapacity, '-C'),
            align: o.align === undefined ? undefined : num(o.align, '--align'),
            diskId: o.diskId,
            format: target.format,
            createType: target.type,
            output,
            sink,
            overwrite: o.overwrite,
            signal,
            onProgress: progress?.update,
          }),
        ).finally(() => progress?.end());
        await sink?.close();
        const say = toStdout ? (s: string) => void process.stderr.write(s) : out;
        if (o.json) {
          await say(JSON.stringify({ output: toStdout ? '-' : output, format: target.format, type: target.type ?? null, ...r }, null, 2) + '\n');
          return;
        }
        if (toStdout && !o.verbose) return;
        const lines = [`${toStdout ? 'wrote' : 'created'} ${toStdout ? 'stdout' : output}: ${target.format}${target.type ? ` ${target.type}` : ''}, ${scheme} (${r.sectorSize}-byte sectors, disk id ${r.diskId}), ${r.capacity} bytes (${humanBytes(r.capacity)})`];
        if (o.verbose) for (const p of r.partitions) lines.push(`  ${String(p.number).padStart(3)}  start ${String(p.offset).padStart(14)}  size ${String(p.length).padStart(14)}  ${typeof p.type === 'number' ? `0x${p.type.toString(16).padStart(2, '0')}` : p.type}${p.label ? `  ${JSON.stringify(p.label)}` : ''}`);
        await say(lines.join('\n') + '\n');
      }),
};
