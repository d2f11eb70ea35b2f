/**
 * Option parsing shared by the commands. This module is loaded on every start (`--version`,
 * `--help` included), so it imports commander and the small core modules only: a command's
 * drivers and ops are imported inside its action.
 */
import { Option, type Command } from 'commander';
import { sizeValue } from '../core/ints.js';
import type { CreateOptions, Driver } from '../formats/types.js';

/** a wrong command line: exit status 2, the message on stderr */
export class UsageError extends Error {}

/** qemu's names for formats that vdkit names otherwise */
export const QEMU_FORMAT_NAMES: Record<string, string> = { vpc: 'vhd' };

/**
 * The names of ops/targets.ts's TARGETS, for help texts: importing that module would load every
 * driver on start. test/unit/cli-options.test.ts keeps the two lists equal.
 */
export const TARGET_NAMES: readonly string[] = ['esxi', 'workstation', 'virtualbox', 'hyperv', 'azure', 'aws', 'gcp', 'qemu'];

export function num(text: string, what: string): number {
  const bytes = sizeValue(text);
  if (bytes === undefined) throw new UsageError(`${what}: expected a number (K/M/G/T suffixes allowed), got ${JSON.stringify(text)}`);
  if (bytes > Number.MAX_SAFE_INTEGER) {
    throw new UsageError(`${what}: ${text} is too large: the most vdkit takes is ${Number.MAX_SAFE_INTEGER} bytes (8 PiB less one byte, 2^53 - 1), and each format holds less (see \`vdkit formats\`)`);
  }
  if (!Number.isInteger(bytes)) throw new UsageError(`${what}: ${text} is not a whole number of bytes`);
  return bytes;
}

/**
 * A VMDK grain size on the command line (-o grain_size, --grain-size): a bare number counts
 * sectors, as the header's grainSize field and mkimg do (128 = 64 KiB); a K/M suffix gives bytes
 * (64K), an s suffix sectors (128s). Returns bytes (CreateOptions.grainSize).
 */
export function grainSizeArg(text: string, what: string): number {
  return /^\s*\d+\s*$/.test(text) ? num(text, what) * 512 : num(text, what);
}

/**
 * A format named on the command line (-f, -O, -F), as its driver names it (qemu's names too).
 * An unknown name is a wrong command line (exit 2), as qemu-img's is, not a failure of a disk.
 */
export async function formatArg(name: string, flag: string): Promise<string> {
  const { backends } = await import('../formats/registry.js');
  const wanted = (QEMU_FORMAT_NAMES[name.toLowerCase()] ?? name).toLowerCase();
  const driver = backends().find((d) => d.name === wanted);
  if (!driver) throw new UsageError(`${flag}: unknown format ${JSON.stringify(name)} (known: ${backends().map((d) => d.name).join(', ')})`);
  return driver.name;
}

/** A create type named on the command line (-t, -o subformat) for `driver`: unknown is a usage error (exit 2). */
export function typeArg(driver: Driver, type: string | undefined, flag: string): void {
  if (type === undefined) return;
  const known = [...driver.capabilities.createTypes, ...driver.sequentialTypes];
  if (!known.includes(driver.normaliseType(type))) {
    throw new UsageError(`${flag}: unknown ${driver.name} type ${JSON.stringify(type)} (known: ${known.join(', ')}; see \`vdkit formats\`)`);
  }
}

/** qemu-img's -o spellings, onto CreateOptions */
export function parseCreateOptions(list: string | undefined): Partial<CreateOptions> {
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
      case 'grain_size':
        out.grainSize = grainSizeArg(value, '-o grain_size');
        break;
      case 'preallocation':
        // metadata (tables allocated, data left sparse) has no implementation here: refused, never made sparse in silence
        if (value === 'metadata') throw new UsageError('-o preallocation=metadata: refused (vdkit does not lay out metadata ahead of the data); use off (sparse) or full/falloc (the zeros written: raw, and fixed or flat types)');
        if (!['off', 'full', 'falloc'].includes(value)) throw new UsageError(`-o preallocation: off, full or falloc, got ${JSON.stringify(value)}`);
        out.preallocate = value !== 'off';
        break;
      case 'compression_type': // qcow2
        if (value !== 'zlib' && value !== 'zstd') throw new UsageError(`-o compression_type: zlib or zstd, got ${JSON.stringify(value)}`);
        out.compressionType = value;
        break;
      case 'data_file': // qcow2: guest data in this file, named relative to the image's folder
        if (value === '' || value === 'on') throw new UsageError('-o data_file: give the data file\'s name (data_file=NAME)');
        out.dataFile = value;
        break;
      case 'data_file_raw':
        out.dataFileRaw = flag();
        break;
      case 'force_size':
        out.chsRounding = !flag();
        break;
      default:
        throw new UsageError(`-o: unknown option ${JSON.stringify(key)} (known: subformat, compat, adapter_type, hwversion, cluster_size, block_size, grain_size, preallocation, force_size, compression_type, data_file, data_file_raw)`);
    }
  }
  return out;
}

/**
 * The format of an image the command makes: `explicit` (-f/-O, qemu's names allowed), else the
 * one whose extension `file` ends in, else `fallback` (create -b: the backing file's), else a
 * usage error naming the choices. The library keeps its own default (DEFAULT_FORMAT); on the
 * command line a name like x.qcow2 must not silently become a VMDK. Loads the drivers, so it
 * is called inside an action.
 */
export async function newImageFormat(explicit: string | undefined, file: string, flag: string, fallback?: () => Promise<string | undefined>): Promise<string> {
  if (explicit !== undefined) return QEMU_FORMAT_NAMES[explicit] ?? explicit;
  const { backends, driverForFileName } = await import('../formats/registry.js');
  const byName = driverForFileName(file)?.name ?? (await fallback?.());
  if (byName !== undefined) return byName;
  const choices = backends().map((d) => `${d.name} (${d.extensions.map((e) => '.' + e).join(' ')})`).join(', ');
  throw new UsageError(`${JSON.stringify(file)}: the name does not say which format to make; give ${flag} FORMAT or a name ending in one of the formats' extensions: ${choices}`);
}

/** the open options every command that opens a disk shares */
export function openOpts(o: { format?: string; allowExternalExtents?: boolean; allowRawDevice?: boolean; untrusted?: boolean; singleLink?: boolean; force?: boolean; ignoreChecksums?: boolean }) {
  return { format: o.format, allowExternalExtents: o.allowExternalExtents, allowRawDevice: o.allowRawDevice, untrusted: o.untrusted, singleLink: o.singleLink, force: o.force, ignoreChecksums: o.ignoreChecksums };
}

export const formatOpt = () => new Option('-f, --format <fmt>', 'image format (detected from the content when omitted)');
export const external = () => new Option('--allow-external-extents', 'allow extent files outside the descriptor\'s folder (absolute paths, "..", devices)');
export const untrusted = () => new Option('--untrusted', 'refuse parent hints that are absolute or leave the child\'s folder');
export const rawDevice = () => new Option('--allow-raw-device', 'open a raw-device VMDK (fullDevice, partitionedDevice, raw device mappings): its extents are devices or partitions, used in place');
export const singleLink = () => new Option('--single-link', 'open only this image, not its parents (unallocated ranges read as zeros)');
export const force = () => new Option('--force', 'write to a disk even though a child (redo log) depends on it');
export const ignoreChecksums = () => new Option('--ignore-checksums', 'open an image whose checksums do not match, read-only, to recover its data (VHD)');

/** options of every command that opens a disk to read it */
export const readingOptions = () => [formatOpt(), untrusted(), singleLink(), external(), rawDevice(), ignoreChecksums()];
/** options of every command that opens a disk to change it */
export const writingOptions = () => [formatOpt(), untrusted(), force(), external(), rawDevice()];

/** one command's own option, as `cmd.option(flags, description, defaultValue)` adds it */
export function opt(flags: string, description: string, defaultValue?: string): Option {
  const o = new Option(flags, description);
  return defaultValue === undefined ? o : o.default(defaultValue);
}
/** as `cmd.requiredOption(...)` adds it */
export const required = (flags: string, description: string, defaultValue?: string): Option => opt(flags, description, defaultValue).makeOptionMandatory();
export const json = (description = 'machine-readable output'): Option => opt('--json', description);

export function withOptions(cmd: Command, options: Option[]): Command {
  for (const o of options) cmd.addOption(o);
  return cmd;
}
