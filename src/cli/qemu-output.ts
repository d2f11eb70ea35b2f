/**
 * `info --output=json` and `map --output=json` as qemu-img 7.2 prints them, so a tool that
 * parses qemu-img's JSON parses vdkit's: the same keys, nesting, key order and layout. What
 * vdkit knows and qemu-img does not (a VHD parent, a VHDX allocation map) is still printed under
 * qemu's keys; what qemu-img sees differently is said by the driver (`Driver.qemu`).
 * test/interop/qemu-json.test.ts compares both tools key by key.
 */
import type { Disk } from '../disk.js';
import type { Driver, Image, MappedExtent } from '../formats/types.js';
import { dirname, isAbsolute, relative, resolveBeside } from '../core/names.js';
import { UsageError } from './options.js';

/** `--output FMT`: human (default) or json; anything else is a usage error, as in qemu-img */
export function outputFormat(value: string | undefined): 'human' | 'json' {
  if (value === undefined || value === 'human') return 'human';
  if (value === 'json') return 'json';
  throw new UsageError(`--output: expected human or json, got ${JSON.stringify(value)}`);
}

type Drivers = (format: string) => Driver;

const qemuName = (driverOf: Drivers, format: string): string => driverOf(format).qemu?.name ?? format;

/**
 * One object per link (top first; only the top without `chain`), keys in qemu-img's order.
 * `file` is the top's name as the user gave it, which qemu-img prints as its filename.
 */
export async function qemuInfo(d: Disk, file: string, chain: boolean, driverOf: Drivers): Promise<Record<string, unknown>[]> {
  const links = chain ? d.links : d.links.slice(0, 1);
  const out: Record<string, unknown>[] = [];
  let name = file;
  for (const [i, link] of links.entries()) {
    const o = await linkInfo(link, name, d.links[i + 1], driverOf);
    out.push(o);
    name = o['full-backing-filename'] as string;
  }
  return out;
}

async function linkInfo(link: Image, filename: string, parent: Image | undefined, driverOf: Drivers): Promise<Record<string, unknown>> {
  const info = await link.info();
  const backing = link.backing();
  // a VDI child records its parent by UUID only: there is no file name to print
  const hint = backing ? backing.hint || backing.hints?.[0] || undefined : undefined;
  // qemu-img names the parent by the hint beside the child's name as given (relative stays
  // relative); where vdkit found the parent elsewhere (another hint, a search by identity), by
  // the name it was found under
  const beside = hint === undefined ? undefined : resolveBeside(filename, hint);
  const ns = link.namespace;
  const full = parent && (beside === undefined || ns.absolute(beside) !== ns.absolute(parent.path)) ? parent.path : beside;
  const o: Record<string, unknown> = {};
  if (backing && info.parentFormat !== undefined) o['backing-filename-format'] = qemuName(driverOf, info.parentFormat);
  o['virtual-size'] = info.capacity;
  o.filename = filename;
  if (info.clusterSize !== undefined) o['cluster-size'] = info.clusterSize;
  o.format = qemuName(driverOf, info.format);
  o['actual-size'] = info.diskSize;
  if (info.specific) o['format-specific'] = { type: qemuName(driverOf, info.format), data: besideName(info.specific, link.path, filename) };
  if (full !== undefined) o['full-backing-filename'] = full;
  if (hint !== undefined) o['backing-filename'] = hint;
  o['dirty-flag'] = info.dirty ?? false;
  return o;
}

/**
 * The files a link names for itself (VMDK extents) as qemu-img names them: beside the link's name
 * as qemu-img has it (`shown`), where vdkit opened the link as `opened` (a parent: absolute).
 */
function besideName(data: Record<string, unknown>, opened: string, shown: string): Record<string, unknown> {
  if (!Array.isArray(data.extents) || opened === shown) return data;
  const extents = data.extents.map((e: Record<string, unknown>) =>
    typeof e.filename === 'string' && !isAbsolute(shown) ? { ...e, filename: resolveBeside(shown, relative(dirname(opened), e.filename)) } : e,
  );
  return { ...data, extents };
}

/** qemu-img's indentation: four spaces */
export function qemuJson(v: unknown): string {
  return JSON.stringify(v, null, 4) + '\n';
}

/** one line of qemu-img map --output=json */
export interface QemuMapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/**
 * The disk's map in qemu-img's terms: data is present data at its depth, zero is present zeros,
 * a range no link stores is absent zeros at the bottom link's depth, except where qemu-img does
 * not follow the bottom link's parents (Driver.qemu.noBacking): there it reads as present zeros.
 * Ranges merge where every key continues, as qemu-img merges them.
 */
export async function qemuMap(d: Disk, driverOf: Drivers): Promise<QemuMapEntry[]> {
  const bottom = d.links[d.links.length - 1]!;
  const baseReadsZeros = !!driverOf(bottom.format).qemu?.noBacking;
  const out: QemuMapEntry[] = [];
  for (const r of await d.mapStatus()) {
    const e = entry(r, baseReadsZeros);
    const last = out[out.length - 1];
    const placed = e.offset === undefined ? last?.offset === undefined : last?.offset !== undefined && last.offset + last.length === e.offset;
    if (last && placed && last.depth === e.depth && last.present === e.present && last.zero === e.zero && last.data === e.data && last.start + last.length === e.start) last.length += e.length;
    else out.push(e);
  }
  return out;
}

function entry(r: MappedExtent, baseReadsZeros: boolean): QemuMapEntry {
  const e: QemuMapEntry = { start: r.offset, length: r.length, depth: r.depth ?? 0, present: r.state !== 'unallocated' || baseReadsZeros, zero: r.state !== 'data', data: r.state === 'data' };
  if (r.fileOffset !== undefined) e.offset = r.fileOffset;
  return e;
}

/** as qemu-img prints it: one object per line inside one array */
export function formatQemuMap(entries: readonly QemuMapEntry[]): string {
  const line = (e: QemuMapEntry) =>
    `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}${e.offset === undefined ? '' : `, "offset": ${e.offset}`}}`;
  return `[${entries.map(line).join(',\n')}]\n`;
}
