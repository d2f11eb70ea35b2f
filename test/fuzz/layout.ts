/**
 * Where the structures of a pristine seed file lie, so mutations can aim at header fields and
 * table entries instead of random bytes, and the checksum fix-ups that let a mutation get past
 * the first validation. The offsets come from vdkit's own field tables (offsetOf) where one
 * exists; tables are read from the pristine bytes (small seeds, so whole-file buffers).
 */
import type { Struct } from '../../src/binary/struct.js';
import { Header as Qcow2Header } from '../../src/formats/qcow2/structs.js';
import { DynamicHeader, Footer, vhdChecksum, FOOTER_CHECKSUM_AT, HEADER_CHECKSUM_AT } from '../../src/formats/vhd/structs.js';
import { VdiHeaderV1Plus } from '../../src/formats/vdi/structs.js';
import { Header as VhdxHeader, RegionTableHeader, RegionTableEntry, MetadataTableHeader, MetadataTableEntry, GUIDS, vhdxChecksum, HEADER_OFFSETS, REGION_TABLE_OFFSETS, HEADER_SIZE, REGION_TABLE_SIZE } from '../../src/formats/vhdx/structs.js';
import { guidText } from '../../src/binary/guid.js';
import { SparseExtentHeader, CowdHeader, SeSparseConstHeader, GD_AT_END } from '../../src/formats/vmdk/structs.js';

export interface Field {
  name: string;
  at: number;
  width: 1 | 2 | 4 | 8;
  le: boolean;
}

export interface Region {
  name: string;
  at: number;
  length: number;
  /** integer fields of a header (absolute offsets) */
  fields?: Field[];
  /** a table of entries of this size */
  entry?: { size: number; le: boolean };
  /** descriptor text (VMDK): `length` is the room it has */
  text?: boolean;
}

export type Fixup = 'vhd' | 'vhdx';

export interface FileLayout {
  regions: Region[];
  fixups: Fixup[];
}

const MAX_TABLE = 4096;

function structRegion(name: string, s: Struct<any>, at: number): Region {
  const fields: Field[] = [];
  for (const f of s.fields as readonly { name: string; type: { kind: string } }[]) {
    const w = ({ u8: 1, u16: 2, u32: 4, u64: 8 } as Record<string, 1 | 2 | 4 | 8 | undefined>)[f.type.kind];
    if (w) fields.push({ name: `${name}.${f.name}`, at: at + s.offsetOf(f.name), width: w, le: s.endian === 'le' });
  }
  return { name, at, length: s.size, fields };
}

function table(name: string, at: number, count: number, size: number, le: boolean, fileSize: number): Region | undefined {
  const n = Math.min(count, MAX_TABLE, Math.floor((fileSize - at) / size));
  if (!(at >= 0 && n > 0)) return undefined;
  return { name, at, length: n * size, entry: { size, le } };
}

const num = (v: bigint) => (v > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(v));

function qcow2(b: Buffer): FileLayout {
  const regions: Region[] = [structRegion('header', Qcow2Header, 0)];
  const push = (r: Region | undefined) => r && regions.push(r);
  const cs = 2 ** b.readUInt32BE(20);
  const l1At = num(b.readBigUInt64BE(40));
  const l1Size = b.readUInt32BE(36);
  push(table('L1', l1At, l1Size, 8, false, b.length));
  const rtAt = num(b.readBigUInt64BE(48));
  const rtClusters = b.readUInt32BE(56);
  push(table('reftable', rtAt, (rtClusters * cs) / 8, 8, false, b.length));
  const order = b.readUInt32BE(4) >= 3 ? b.readUInt32BE(96) : 4;
  const mask = 0x00fffffffffffe00n;
  for (let i = 0; i < Math.min(l1Size, 64) && l1At + i * 8 + 8 <= b.length; i++) {
    const o = num(b.readBigUInt64BE(l1At + i * 8) & mask);
    if (o > 0) push(table(`L2[${i}]`, o, cs / 8, 8, false, b.length));
  }
  for (let i = 0; i < 16 && rtAt + i * 8 + 8 <= b.length; i++) {
    const o = num(b.readBigUInt64BE(rtAt + i * 8) & ~0x1ffn);
    if (o > 0 && order === 4) push(table(`refblock[${i}]`, o, cs / 2, 2, false, b.length));
  }
  return { regions, fixups: [] };
}

function vhd(b: Buffer): FileLayout {
  const regions: Region[] = [];
  if (b.length >= 512) regions.push(structRegion('footer', Footer, b.length - 512));
  if (b.subarray(0, 8).toString('latin1') === 'conectix') regions.push(structRegion('footerCopy', Footer, 0));
  const dataOffset = b.length >= 512 ? num(b.readBigUInt64BE(b.length - 512 + 16)) : -1;
  if (dataOffset > 0 && dataOffset + 1024 <= b.length) {
    regions.push(structRegion('dynamicHeader', DynamicHeader, dataOffset));
    const bat = num(b.readBigUInt64BE(dataOffset + 16));
    const entries = b.readUInt32BE(dataOffset + 28);
    const r = table('BAT', bat, entries, 4, false, b.length);
    if (r) regions.push(r);
    regions.push({ name: 'parentName', at: dataOffset + 64, length: 512 });
  }
  return { regions, fixups: ['vhd'] };
}

function vdi(b: Buffer): FileLayout {
  const regions: Region[] = [structRegion('header', VdiHeaderV1Plus, 0)];
  const off = b.readUInt32LE(VdiHeaderV1Plus.offsetOf('offBlocks'));
  const n = b.readUInt32LE(VdiHeaderV1Plus.offsetOf('cBlocks'));
  const r = table('blockMap', off, n, 4, true, b.length);
  if (r) regions.push(r);
  return { regions, fixups: [] };
}

function vhdx(b: Buffer): FileLayout {
  const regions: Region[] = [];
  for (const at of HEADER_OFFSETS) regions.push(structRegion(`header@${at}`, VhdxHeader, at));
  for (const at of REGION_TABLE_OFFSETS) {
    regions.push(structRegion(`regionTable@${at}`, RegionTableHeader, at));
    const n = Math.min(b.readUInt32LE(at + 8), 8);
    for (let i = 0; i < n; i++) {
      const e = at + 16 + i * 32;
      regions.push(structRegion(`region[${i}]@${at}`, RegionTableEntry, e));
      if (at !== REGION_TABLE_OFFSETS[0]) continue;
      const guid = guidText(b, 'le', e);
      const fo = num(b.readBigUInt64LE(e + 16));
      const len = b.readUInt32LE(e + 24);
      if (guid === GUIDS.BAT_REGION) {
        const r = table('BAT', fo, len / 8, 8, true, b.length);
        if (r) regions.push(r);
      } else if (guid === GUIDS.METADATA_REGION && fo + 32 <= b.length) {
        regions.push(structRegion('metadataTable', MetadataTableHeader, fo));
        const m = Math.min(b.readUInt16LE(fo + 10), 16);
        for (let j = 0; j < m; j++) {
          const me = fo + 32 + j * 32;
          if (me + 32 > b.length) break;
          regions.push(structRegion(`metadataEntry[${j}]`, MetadataTableEntry, me));
          const io = fo + b.readUInt32LE(me + 16);
          const il = Math.min(b.readUInt32LE(me + 20), 4096);
          if (io + il <= b.length && il > 0) {
            const fields: Field[] = [];
            for (let k = 0; k + 4 <= il && k < 64; k += 4) fields.push({ name: `item[${j}]+${k}`, at: io + k, width: 4, le: true });
            regions.push({ name: `metadataItem[${j}]`, at: io, length: il, fields });
          }
        }
      }
    }
  }
  return { regions, fixups: ['vhdx'] };
}

function vmdkSparse(b: Buffer): FileLayout {
  const regions: Region[] = [structRegion('header', SparseExtentHeader, 0)];
  const sec = (f: 'descriptorOffset' | 'descriptorSize') => num(b.readBigUInt64LE(SparseExtentHeader.offsetOf(f))) * 512;
  let hdr = b;
  // streamOptimized: the real header is the footer (a marker, then the header, before the EOS marker)
  if (b.readBigUInt64LE(SparseExtentHeader.offsetOf('gdOffset')) === GD_AT_END && b.length > 1536) {
    regions.push(structRegion('footer', SparseExtentHeader, b.length - 1024));
    hdr = b.subarray(b.length - 1024);
  }
  const rd = (f: 'gdOffset' | 'rgdOffset') => num(hdr.readBigUInt64LE(SparseExtentHeader.offsetOf(f))) * 512;
  const capacity = num(b.readBigUInt64LE(12));
  const grain = num(b.readBigUInt64LE(20));
  const gtes = b.readUInt32LE(SparseExtentHeader.offsetOf('numGTEsPerGT')) || 512;
  const nGD = grain > 0 ? Math.ceil(capacity / grain / gtes) : 0;
  const dOff = sec('descriptorOffset');
  const dSize = sec('descriptorSize');
  if (dOff > 0 && dSize > 0 && dOff + dSize <= b.length) regions.push({ name: 'descriptor', at: dOff, length: dSize, text: true });
  for (const [name, at] of [['GD', rd('gdOffset')], ['RGD', rd('rgdOffset')]] as const) {
    const r = at > 0 ? table(name, at, nGD, 4, true, b.length) : undefined;
    if (!r) continue;
    regions.push(r);
    for (let i = 0; i < Math.min(nGD, 8); i++) {
      const gt = b.readUInt32LE(at + i * 4) * 512;
      const t = gt > 0 ? table(`${name === 'GD' ? 'GT' : 'RGT'}[${i}]`, gt, gtes, 4, true, b.length) : undefined;
      if (t) regions.push(t);
    }
  }
  return { regions, fixups: [] };
}

function cowd(b: Buffer): FileLayout {
  const regions: Region[] = [structRegion('header', CowdHeader, 0)];
  const gd = b.readUInt32LE(CowdHeader.offsetOf('gdOffset')) * 512;
  const n = b.readUInt32LE(CowdHeader.offsetOf('numGDEntries'));
  const r = table('GD', gd, n, 4, true, b.length);
  if (r) regions.push(r);
  for (let i = 0; r && i < Math.min(n, 8); i++) {
    const t = table(`GT[${i}]`, b.readUInt32LE(gd + i * 4) * 512, 4096, 4, true, b.length);
    if (t) regions.push(t);
  }
  return { regions, fixups: [] };
}

function seSparse(b: Buffer): FileLayout {
  const regions: Region[] = [structRegion('constHeader', SeSparseConstHeader, 0)];
  for (const f of SeSparseConstHeader.fields as readonly { name: string }[]) {
    if (!/grainDirOffset|grainTablesOffset|backmapOffset/.test(f.name)) continue;
    const at = num(b.readBigUInt64LE(SeSparseConstHeader.offsetOf(f.name as never))) * 512;
    const r = table(f.name, at, 512, 8, true, b.length);
    if (r) regions.push(r);
  }
  return { regions, fixups: [] };
}

/** The layout of one file of a seed, by its content. */
export function layoutOf(b: Buffer): FileLayout {
  if (b.length >= 4 && b.readUInt32BE(0) === 0x514649fb) return qcow2(b);
  if (b.length >= 8 && b.subarray(0, 8).toString('latin1') === 'vhdxfile') return vhdx(b);
  if (b.length >= 72 && b.readUInt32LE(64) === 0xbeda107f) return vdi(b);
  if (b.length >= 4 && b.subarray(0, 4).toString('latin1') === 'KDMV') return vmdkSparse(b);
  if (b.length >= 4 && b.subarray(0, 4).toString('latin1') === 'COWD') return cowd(b);
  if (b.length >= 8 && b.readBigUInt64LE(0) === 0xcafebaben) return seSparse(b);
  if (b.length >= 512 && b.subarray(b.length - 512, b.length - 504).toString('latin1') === 'conectix') return vhd(b);
  if (b.length < 1024 * 1024 && /^[\s#]*(# Disk DescriptorFile|version=)/.test(b.subarray(0, 64).toString('latin1'))) {
    return { regions: [{ name: 'descriptor', at: 0, length: b.length, text: true }], fixups: [] };
  }
  return { regions: [], fixups: [] };
}

/** Recompute the checksums a mutation broke (VHD footer and dynamic header, VHDX headers and region tables), in place. */
export function applyFixup(b: Buffer, kind: Fixup): void {
  if (kind === 'vhd') {
    const fix = (at: number, len: number, sumAt: number) => {
      if (at < 0 || at + len > b.length) return;
      const s = b.subarray(at, at + len);
      s.writeUInt32BE(vhdChecksum(s, sumAt), sumAt);
    };
    if (b.length < 512) return;
    fix(b.length - 512, 512, FOOTER_CHECKSUM_AT);
    if (b.subarray(0, 8).toString('latin1') === 'conectix') fix(0, 512, FOOTER_CHECKSUM_AT);
    const dataOffset = b.readBigUInt64BE(b.length - 512 + 16);
    if (dataOffset < BigInt(b.length)) fix(Number(dataOffset), 1024, HEADER_CHECKSUM_AT);
  } else {
    for (const at of HEADER_OFFSETS) {
      if (at + HEADER_SIZE <= b.length) b.writeUInt32LE(vhdxChecksum(b.subarray(at, at + HEADER_SIZE)), at + 4);
    }
    for (const at of REGION_TABLE_OFFSETS) {
      if (at + REGION_TABLE_SIZE <= b.length) b.writeUInt32LE(vhdxChecksum(b.subarray(at, at + REGION_TABLE_SIZE)), at + 4);
    }
  }
}
