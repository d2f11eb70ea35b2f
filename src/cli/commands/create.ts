/** `vdkit create`: a new disk, or with -b a child of a backing disk (qemu-img create). */
import { Option } from 'commander';
import type { CliCommand } from '../command.js';
import { QEMU_FORMAT_NAMES, UsageError, grainSizeArg, newImageFormat, num, parseCreateOptions, typeArg } from '../options.js';
import { humanBytes, out } from '../output.js';

export const create: CliCommand = {
  name: 'create',
  summary: 'create a new disk (vmware-vdiskmanager -c / VixDiskLib_Create)',
  define: (cmd) =>
    cmd
      .addOption(new Option('-f, --format <fmt>', 'image format (see `vdkit formats`); default: the one FILE\'s extension names (.vmdk .vdi .vhd .vhdx .qcow2 .raw/.img ...; with -b, else the backing file\'s)'))
      .option('-t, --type <type>', 'vmdk: monolithicSparse (0, default), twoGbMaxExtentSparse (1), monolithicFlat (2), twoGbMaxExtentFlat (3), vmfs (4), vmfsThin; other formats: see `vdkit formats`')
      .option('-a, --adapter <type>', 'ide, buslogic, lsilogic (default) or pvscsi')
      .option('--hw <version>', 'virtual hardware version written to ddb.virtualHWVersion (default 4)')
      .option('--thin', 'vmfs: mark the disk thin provisioned')
      .option('--preallocate', 'raw, flat and fixed types: write zeros into the data files instead of leaving them sparse (refused for types that grow)')
      .option('--grain-size <n>', 'vmdk sparse types: grain size in sectors, a power of two from 16 to 65536 (default 128 = 64 KiB); 64K-style values are bytes')
      .option('--raw-device <path>', 'vmdk: a raw-device disk (fullDevice) naming this block device or partition, used in place (opened later with --allow-raw-device); SIZE may then be omitted (the whole device)')
      .option('--chs-rounding', 'vhd: round the size up to a whole CHS geometry (Virtual PC; qemu-img without force_size)')
      .option('--overwrite', 'replace existing files')
      .option('-o, --options <list>', 'qemu-img style format options: subformat, adapter_type, hwversion, cluster_size, block_size, grain_size (vmdk, sectors), preallocation, compression_type (qcow2: zlib, zstd), data_file, data_file_raw (qcow2) (key=value,...)')
      .option('-b, --backing <file>', 'create a child of this disk (qemu-img create -b); SIZE may then be omitted')
      .option('-F, --backing-format <fmt>', 'format of the backing file (detected when omitted)')
      .argument('<file>')
      .argument('[size]', 'bytes, or with a K/M/G/T suffix, or sectors with an s suffix (2048s)')
      .action(async (file: string, size: string | undefined, o) => {
        const extra = parseCreateOptions(o.options);
        if (o.grainSize !== undefined) extra.grainSize = grainSizeArg(o.grainSize, '--grain-size');
        // -t and -o subformat/compat are checked against the format they are for (exit 2 when unknown)
        const checkTypes = async (format: string) => {
          // fullDevice is made only with --raw-device: the driver refuses it without, naming that option
          if (format === 'vmdk' && [o.type, extra.type].some((x) => typeof x === 'string' && x.toLowerCase() === 'fulldevice')) return;
          const { driverByName } = await import('../../formats/registry.js');
          typeArg(driverByName(format), o.type, '-t');
          typeArg(driverByName(format), extra.type, '-o');
        };
        if (o.backing !== undefined) {
          // a child takes these from its parent or has no use for them: refused rather than dropped
          const unused = (
            [
              ['adapter', '-a'],
              ['hw', '--hw'],
              ['thin', '--thin'],
              ['preallocate', '--preallocate'],
              ['chsRounding', '--chs-rounding'],
              ['rawDevice', '--raw-device'],
            ] as const
          ).filter(([k]) => o[k] !== undefined);
          if (unused.length > 0) throw new UsageError(`${unused.map(([, flag]) => flag).join(', ')}: not with -b (a child keeps its parent's adapter, hardware version and geometry, and grows as it is written)`);
          const [{ DiskError }, { detectFormat }, { createChild }] = await Promise.all([import('../../core/errors.js'), import('../../disk.js'), import('../../ops/child.js')]);
          // no -f and a name that names no format: the child is of its parent's format (createChild's default)
          const format = await newImageFormat(o.format, file, '-f', async () => (await detectFormat(o.backing)).name);
          await checkTypes(format);
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
        if (size === undefined && o.rawDevice === undefined) throw new UsageError('size: required unless -b BACKING or --raw-device is given');
        const capacity = size === undefined ? 0 : num(size, 'size');
        const format = await newImageFormat(o.format, file, '-f');
        await checkTypes(format);
        const { Disk } = await import('../../disk.js');
        const d = await Disk.create(file, {
          format,
          capacity,
          adapterType: o.adapter,
          hwVersion: o.hw,
          thin: o.thin,
          preallocate: o.preallocate,
          chsRounding: o.chsRounding,
          rawDevice: o.rawDevice,
          overwrite: o.overwrite,
          ...extra,
          type: o.type ?? extra.type,
        });
        await d.close();
        await out(`created ${file}: ${d.format} ${d.type}, ${d.capacity} bytes (${humanBytes(d.capacity)})\n`);
      }),
};
