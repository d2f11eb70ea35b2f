/**
 * LVM2 volume groups from the metadata text their PVs hold: each visible logical volume becomes
 * a list of byte ranges on this disk. Linear segments (type "striped" with one stripe) are one
 * range per segment; striped segments are one range per stripe chunk, in logical order. A
 * segment on a PV that is not on this disk, or of a type not read here (mirror, raid, thin,
 * snapshot, cache ...), leaves its LV listed but `complete: false`, with a warning.
 */
import { DiskError } from '../../core/errors.js';
import { MAX_RANGES, mergeRanges, type ByteRange } from '../source.js';
import { warning, type InsideWarning, type LogicalVolume, type VolumeGroup } from '../types.js';
import { parseLvmText, type LvmSection, type LvmValue } from './text.js';
import type { PvLabel } from './label.js';

const SECTOR = 512;

/** a PV label found on this disk, where its bytes start, and its metadata text */
export interface FoundPv {
  readonly label: PvLabel;
  /** byte offset of the PV (the partition or the whole disk) on the disk */
  readonly diskOffset: number;
  /** bytes the PV spans on this disk */
  readonly length: number;
  readonly text?: string;
}

const isSection = (v: LvmValue | undefined): v is LvmSection => typeof v === 'object' && v !== null && !Array.isArray(v);

function num(s: LvmSection, key: string, struct: string): number {
  const v = s[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new DiskError('CORRUPT', `${key} is ${v === undefined ? 'missing' : JSON.stringify(v)}, not a whole number`, { struct, field: key, found: v });
  }
  return v;
}

function str(s: LvmSection, key: string, struct: string): string {
  const v = s[key];
  if (typeof v !== 'string') throw new DiskError('CORRUPT', `${key} is ${v === undefined ? 'missing' : JSON.stringify(v)}, not a string`, { struct, field: key, found: v });
  return v;
}

/** the VG section of parsed metadata: the one section that has physical_volumes */
function vgSection(root: LvmSection): [string, LvmSection] | undefined {
  for (const [k, v] of Object.entries(root)) if (isSection(v) && isSection(v.physical_volumes)) return [k, v];
  return undefined;
}

/** Every volume group the PVs on this disk describe (the newest metadata of each: highest seqno). */
export function volumeGroups(found: readonly FoundPv[], warnings: InsideWarning[]): VolumeGroup[] {
  const newest = new Map<string, { name: string; vg: LvmSection; seqno: number }>();
  for (const pv of found) {
    if (pv.text === undefined) continue;
    const root = parseLvmText(pv.text);
    const hit = vgSection(root);
    if (!hit) {
      warnings.push(warning(`PV ${pv.label.uuid}: metadata names no volume group`, 'LVM metadata', 'physical_volumes'));
      continue;
    }
    const [name, vg] = hit;
    const id = str(vg, 'id', `LVM VG ${name}`);
    const seqno = num(vg, 'seqno', `LVM VG ${name}`);
    const have = newest.get(id);
    if (!have || seqno > have.seqno) newest.set(id, { name, vg, seqno });
  }
  const byUuid = new Map(found.map((p) => [p.label.uuid, p]));
  return [...newest.entries()].map(([id, { name, vg, seqno }]) => mapVg(name, id, seqno, vg, byUuid, warnings));
}

function mapVg(name: string, uuid: string, seqno: number, vg: LvmSection, byUuid: Map<string, FoundPv>, warnings: InsideWarning[]): VolumeGroup {
  const struct = `LVM VG ${name}`;
  const extentSize = num(vg, 'extent_size', struct) * SECTOR;
  if (extentSize === 0) throw new DiskError('CORRUPT', 'extent_size is 0', { struct, field: 'extent_size', found: 0 });
  const pvs: { name: string; uuid: string; offset?: number }[] = [];
  /** pv name -> where its extents start on the disk, and how many it has */
  const pvStart = new Map<string, { at: number; count: number }>();
  for (const [pvName, pv] of Object.entries(vg.physical_volumes as LvmSection)) {
    if (!isSection(pv)) continue;
    const pvStruct = `${struct} PV ${pvName}`;
    const pvUuid = str(pv, 'id', pvStruct);
    const here = byUuid.get(pvUuid);
    pvs.push({ name: pvName, uuid: pvUuid, offset: here?.diskOffset });
    if (here) pvStart.set(pvName, { at: here.diskOffset + num(pv, 'pe_start', pvStruct) * SECTOR, count: num(pv, 'pe_count', pvStruct) });
  }
  const lvs: LogicalVolume[] = [];
  const lvSection = vg.logical_volumes;
  for (const [lvName, lv] of Object.entries(isSection(lvSection) ? lvSection : {})) {
    if (!isSection(lv)) continue;
    const status = Array.isArray(lv.status) ? lv.status : [];
    // hidden LVs are the parts of others (thin pool data, mirror legs, raid images)
    if (!status.includes('VISIBLE')) continue;
    lvs.push(mapLv(name, lvName, lv, extentSize, pvStart, warnings));
  }
  return { name, uuid, seqno, extentSize, pvs, lvs };
}

function mapLv(vgName: string, name: string, lv: LvmSection, extentSize: number, pvStart: Map<string, { at: number; count: number }>, warnings: InsideWarning[]): LogicalVolume {
  const struct = `LVM LV ${vgName}/${name}`;
  const segs = Object.entries(lv)
    .filter((e): e is [string, LvmSection] => /^segment[0-9]+$/.test(e[0]) && isSection(e[1]))
    .map(([k, s]) => ({ key: k, s, start: num(s, 'start_extent', `${struct} ${k}`), count: num(s, 'extent_count', `${struct} ${k}`) }))
    .sort((a, b) => a.start - b.start);
  const ranges: ByteRange[] = [];
  let complete = true;
  let layout = 'linear';
  let next = 0;
  let extents = 0;
  const incomplete = (text: string, field: string) => {
    if (complete) warnings.push(warning(`${text}: its bytes are not mapped`, struct, field));
    complete = false;
  };
  for (const { key, s, start, count } of segs) {
    const segStruct = `${struct} ${key}`;
    extents += count;
    if (start !== next) incomplete(`${key} starts at extent ${start}, expected ${next}`, `${key}.start_extent`);
    next = start + count;
    const type = typeof s.type === 'string' ? s.type : '';
    if (type !== 'striped' && type !== 'linear') {
      layout = type || 'unknown';
      incomplete(`${key} is of type ${JSON.stringify(type)}, not read`, `${key}.type`);
      continue;
    }
    const n = num(s, 'stripe_count', segStruct);
    const list = Array.isArray(s.stripes) ? s.stripes : [];
    if (n < 1 || list.length !== 2 * n) throw new DiskError('CORRUPT', `stripes lists ${list.length / 2} stripes, stripe_count says ${n}`, { struct: segStruct, field: 'stripes', expected: 2 * n, found: list.length });
    if (count % n !== 0) throw new DiskError('CORRUPT', `${count} extents do not split over ${n} stripes`, { struct: segStruct, field: 'extent_count', found: count });
    const per = count / n;
    const starts: number[] = [];
    for (let i = 0; i < n; i++) {
      const pvName = list[2 * i];
      const pe = list[2 * i + 1];
      if (typeof pvName !== 'string' || typeof pe !== 'number' || !Number.isSafeInteger(pe) || pe < 0) {
        throw new DiskError('CORRUPT', `stripe ${i} is not a PV name and an extent`, { struct: segStruct, field: 'stripes', found: [pvName, pe] });
      }
      const pv = pvStart.get(pvName);
      if (!pv) {
        incomplete(`${key} is on ${pvName}, which is not on this disk`, `${key}.stripes`);
        break;
      }
      if (pe + per > pv.count) warnings.push(warning(`stripe ${i} uses extents ${pe}..${pe + per - 1} of ${pvName}, which has ${pv.count}`, segStruct, 'stripes'));
      starts.push(pv.at + pe * extentSize);
    }
    if (starts.length !== n || !complete) continue;
    if (n === 1) {
      ranges.push({ offset: starts[0]!, length: count * extentSize });
      continue;
    }
    layout = 'striped';
    const chunk = num(s, 'stripe_size', segStruct) * SECTOR;
    const perBytes = per * extentSize;
    if (chunk === 0 || perBytes % chunk !== 0) throw new DiskError('CORRUPT', `stripe size ${chunk} bytes does not divide ${perBytes}`, { struct: segStruct, field: 'stripe_size', found: chunk });
    const rows = perBytes / chunk;
    if (ranges.length + rows * n > MAX_RANGES) throw new DiskError('CORRUPT', `${rows * n} stripe chunks are more than ${MAX_RANGES}`, { struct: segStruct, field: 'stripe_size', found: chunk });
    for (let r = 0; r < rows; r++) for (let i = 0; i < n; i++) ranges.push({ offset: starts[i]! + r * chunk, length: chunk });
  }
  const length = extents * extentSize;
  if (!Number.isSafeInteger(length)) throw new DiskError('CORRUPT', 'LV size is too large', { struct, field: 'extent_count', found: extents });
  return { vg: vgName, name, uuid: typeof lv.id === 'string' ? lv.id : '', length, ranges: complete ? mergeRanges(ranges) : [], layout, complete };
}
