/**
 * ISO 9660 (ECMA-119): volume descriptors from sector 16 (2048-byte sectors); the primary one
 * (type 1, "CD001") holds the volume identifier (the label, space-padded) and the volume's
 * dates. Like blkid, the UUID is the modification date as YYYY-MM-DD-HH-MM-SS-cc (the creation
 * date when the modification date is unset).
 */
import { Struct, ascii, bytes, reserved, u16, u32, u8 } from '../../binary/struct.js';
import { readIfThere } from '../source.js';
import type { Probe } from './types.js';

export const IsoPrimaryDescriptor = new Struct(
  'ISO 9660 primary volume descriptor',
  'le',
  [
    { name: 'type', type: u8 },
    { name: 'id', type: ascii(5) },
    { name: 'version', type: u8 },
    { name: 'unused0', type: reserved(1) },
    { name: 'systemId', type: ascii(32) },
    { name: 'volumeId', type: ascii(32) },
    { name: 'unused1', type: reserved(8) },
    /** both-endian: the little-endian half, then the big-endian one */
    { name: 'volumeSpaceSize', type: u32 },
    { name: 'volumeSpaceSizeBe', type: reserved(4) },
    { name: 'gap0', type: reserved(128 - 88) },
    { name: 'logicalBlockSize', type: u16 },
    { name: 'gap1', type: reserved(813 - 130) },
    { name: 'created', type: bytes(17) },
    { name: 'modified', type: bytes(17) },
  ] as const,
  847,
);

const ISO_AT = 16 * 2048;

function dateUuid(d: Buffer): string | undefined {
  const s = d.toString('latin1', 0, 16);
  if (!/^[0-9]{16}$/.test(s) || /^0+$/.test(s)) return undefined;
  return `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}-${s.slice(8, 10)}-${s.slice(10, 12)}-${s.slice(12, 14)}-${s.slice(14, 16)}`;
}

export const iso9660: Probe = {
  type: 'iso9660',
  async probe(src) {
    const b = await readIfThere(src, ISO_AT, IsoPrimaryDescriptor.size);
    if (!b || b[0] !== 1 || b.toString('latin1', 1, 6) !== 'CD001') return undefined;
    const pvd = IsoPrimaryDescriptor.decode(b);
    const label = pvd.volumeId.trimEnd();
    const blockSize = pvd.logicalBlockSize || 2048;
    return {
      type: 'iso9660',
      usage: 'filesystem',
      label: label || undefined,
      uuid: dateUuid(pvd.modified) ?? dateUuid(pvd.created),
      size: pvd.volumeSpaceSize * blockSize,
      blockSize,
    };
  },
};
