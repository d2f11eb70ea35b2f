/** Human-readable formatting shared by the commands. */
import type { DiskInfo } from '../formats/types.js';
import type { DiskProperties } from '../formats/common/properties.js';

export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${Number.isInteger(v) ? v : v.toFixed(2)} ${units[u]}`;
}
/**
 * qemu-img's format-specific keys (DiskInfo.specific) shown as rows, in qemu-img info's order;
 * keys a format does not give are not shown, so no format needs naming here
 */
const SPECIFIC_ROWS: readonly [key: string, label: string][] = [
  ['compat', 'compat'],
  ['compression-type', 'compression type'],
  ['lazy-refcounts', 'lazy refcounts'],
  ['refcount-bits', 'refcount bits'],
  ['data-file', 'data file'],
  ['data-file-raw', 'data file raw'],
  ['corrupt', 'corrupt'],
  ['extended-l2', 'extended l2'],
];

export interface InfoTextOptions {
  /**
   * the image cannot be opened for writing (a read-only format or type, or files the user may
   * not write): the only case the "read only" row is shown, since info itself always opens
   * read-only and DiskInfo.readOnly says only that
   */
  cannotWrite?: boolean;
}

export function formatInfo(i: DiskInfo, opts: InfoTextOptions = {}): string {
  const g = (x?: { cylinders: number; heads: number; sectors: number }) => (x ? `${x.cylinders}/${x.heads}/${x.sectors}` : '-');
  const rows: [string, string][] = [
    ['image', i.files[0] ?? ''],
    ['format', i.format],
    ['type', i.type],
    ['capacity', `${i.capacity} bytes (${humanBytes(i.capacity)}, ${i.sectors} sectors)`],
  ];
  if (i.adapterType !== undefined) rows.push(['adapter type', i.adapterType]);
  if (i.format === 'vmdk') rows.push(['BIOS geometry', g(i.biosGeometry)], ['physical geometry', g(i.geometry)]);
  else if (i.geometry) rows.push(['geometry', g(i.geometry)]);
  rows.push(['number of links', String(i.numLinks)]);
  if (i.numLinks > 1 || i.parent !== undefined) rows.push(['parent', i.parent ?? '-']);
  // a content ID is VMDK's (qemu-img's format-specific "cid"); VHDX and VDI report their
  // identities as DiskInfo.cid too, for chains, but they are GUIDs, not CIDs
  if (i.cid !== undefined && i.specific?.cid !== undefined) rows.push(['CID', i.cid], ['parent CID', i.parentCid ?? '-']);
  if (i.uuid) rows.push(['uuid', i.uuid]);
  if (i.hwVersion) rows.push(['hardware version', i.hwVersion]);
  if (i.format === 'vmdk' && i.version !== undefined) rows.push(['sparse version', String(i.version)]);
  if (i.clusterSize !== undefined) rows.push(['cluster size', `${i.clusterSize} bytes (${humanBytes(i.clusterSize)})`]);
  for (const [key, label] of SPECIFIC_ROWS) {
    const v = i.specific?.[key];
    if (v !== undefined) rows.push([label, typeof v === 'boolean' ? (v ? 'yes' : 'no') : String(v)]);
  }
  // persistent bitmaps (qemu-img info's "bitmaps:" list): name, granularity, flags
  const bitmaps = i.specific?.bitmaps as { name: string; granularity: number; flags: string[] }[] | undefined;
  for (const b of bitmaps ?? []) rows.push(['bitmap', `${b.name}: granularity ${b.granularity}, flags [${b.flags.join(', ')}]`]);
  if (i.dirty !== undefined) rows.push(['dirty', i.dirty ? 'yes: not closed cleanly (vdkit check)' : 'no']);
  for (const w of i.warnings ?? []) rows.push(['warning', w]);
  rows.push(['allocated', `${i.allocatedBytes} bytes (${humanBytes(i.allocatedBytes)})`]);
  rows.push(['file size', `${i.fileSize} bytes (${humanBytes(i.fileSize)})`]);
  rows.push(['disk size', `${i.diskSize} bytes (${humanBytes(i.diskSize)})`]);
  if (opts.cannotWrite) rows.push(['read only', 'yes']);
  const width = Math.max(...rows.map(([k]) => k.length));
  let out = rows.map(([k, v]) => `${k.padEnd(width)} : ${v}`).join('\n') + '\n';
  if (i.chain && i.chain.length > 1) {
    out += `chain (top first):\n`;
    i.chain.forEach((p, n) => (out += `  ${n + 1}. ${p}\n`));
  }
  out += `extents:\n`;
  for (const e of i.extents) {
    out += `  ${e.access} ${e.type.padEnd(6)} ${String(e.length).padStart(14)} bytes at ${e.virtualOffset}${e.fileOffset ? ` (file offset ${e.fileOffset})` : ''} ${e.path ?? ''}\n`;
  }
  return out;
}

/** the uniform properties (`vdkit info`, `vdkit set`): only those the format stores */
export function formatProperties(p: DiskProperties): string {
  const g = (x: { cylinders: number; heads: number; sectors: number }) => `${x.cylinders}/${x.heads}/${x.sectors}`;
  const rows: [string, string | undefined][] = [
    ['uuid', p.uuid],
    ['modification uuid', p.modificationUuid],
    ['parent uuid', p.parentUuid],
    ['parent modification uuid', p.parentModificationUuid],
    ['comment', p.comment === undefined ? undefined : JSON.stringify(p.comment)],
    ['PCHS geometry', p.pchs && g(p.pchs)],
    ['LCHS geometry', p.lchs && g(p.lchs)],
    ['adapter type', p.adapterType],
  ];
  const shown = rows.filter((r): r is [string, string] => r[1] !== undefined);
  if (shown.length === 0) return 'properties: none\n';
  return 'properties:\n' + shown.map(([k, v]) => `  ${k}: ${v}\n`).join('');
}

/** Hex dump in the style of the VDDK sample's -dump: offset, 16 bytes, ASCII. */
export function hexDump(buf: Buffer, base: number): string {
  const lines: string[] = [];
  for (let i = 0; i < buf.length; i += 16) {
    const row = buf.subarray(i, i + 16);
    const hex = [...row].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = [...row].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${(base + i).toString(16).padStart(8, '0')}: ${hex.padEnd(47)}  |${ascii}|`);
  }
  return lines.join('\n') + '\n';
}

/** Write to stdout, resolving once the data is handed over (so a command's output is complete before exit). */
export function out(s: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(s, (err) => (err ? reject(err) : resolve())));
}
