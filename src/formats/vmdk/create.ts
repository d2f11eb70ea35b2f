/**
 * Creating VMDK links of every hosted type and VMFS, with VMware's file naming:
 *   monolithicSparse      <n>.vmdk (descriptor embedded at sector 1, 20 sectors reserved)
 *   monolithicFlat        <n>.vmdk + <n>-flat.vmdk
 *   twoGbMaxExtentSparse  <n>.vmdk + <n>-s001.vmdk, -s002, ... (4192256-sector extents)
 *   twoGbMaxExtentFlat    <n>.vmdk + <n>-f001.vmdk, ...
 *   vmfs                  <n>.vmdk + <n>-flat.vmdk (extent type VMFS; thin adds ddb.thinProvisioned)
 * Every file is created exclusively (unless overwrite); a failure removes what was created.
 */
import { basename, dirname, join } from '../../core/names.js';
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE, ceilDiv } from '../../core/ints.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { CreateOptions } from '../types.js';
import { refusePreallocate } from '../common/create.js';
import { Descriptor, parseCid, type ExtentLine } from './descriptor.js';
import type { VmdkImage } from './image.js';
import { openVmdk } from './open.js';
import { ADAPTER_TYPES, RAW_DEVICE_TYPES, SPLIT_EXTENT_SECTORS, grainSectorsOf, newCid, newDdb, normaliseCreateType, writeFreshSparse } from './layout.js';

/** grains and tables of one hosted sparse extent must stay below sector 2^32 */
export const MAX_MONOLITHIC_SPARSE_SECTORS = 2 ** 32 - 2 ** 20;


// normaliseCreateType lives in layout.ts (the driver and measure need it without this file's code)
export { normaliseCreateType };

export async function createVmdk(ns: Namespace, path: string, opts: CreateOptions): Promise<VmdkImage> {
  const type = normaliseCreateType(opts.type ?? (opts.rawDevice !== undefined ? 'fullDevice' : undefined));
  if (RAW_DEVICE_TYPES.has(type.toLowerCase()) || opts.rawDevice !== undefined) return createRawDevice(ns, path, type, opts);
  if (type === 'streamOptimized') {
    throw new DiskError('NOTSUPPORTED', 'streamOptimized disks are written by conversion, not created empty (vdkit convert is where this writer will live)', { path, field: 'type' });
  }
  if (!['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'vmfs'].includes(type)) {
    throw new DiskError('INVAL', `unknown VMDK type ${JSON.stringify(opts.type)}`, { path, field: 'type', expected: 'monolithicSparse, monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, vmfs or 0-4' });
  }
  if (!Number.isSafeInteger(opts.capacity) || opts.capacity <= 0) {
    throw new DiskError('INVAL', 'capacity must be a positive whole number of bytes', { path, field: 'capacity', found: opts.capacity });
  }
  const sectors = ceilDiv(opts.capacity, SECTOR_SIZE);
  const sparseType = type === 'monolithicSparse' || type === 'twoGbMaxExtentSparse';
  if (opts.grainSize !== undefined && !sparseType) {
    throw new DiskError('INVAL', `a ${type} disk has no grains: grain size is for monolithicSparse and twoGbMaxExtentSparse`, { path, field: 'grainSize', found: opts.grainSize });
  }
  const grainSectors = grainSectorsOf(opts.grainSize, path);
  if (opts.preallocate && (type === 'monolithicSparse' || type === 'twoGbMaxExtentSparse')) refusePreallocate(path, 'VMDK', type, 'monolithicFlat, twoGbMaxExtentFlat and vmfs');
  const esx = type === 'vmfs';
  const adapterType = opts.adapterType ?? 'lsilogic';
  if (!(ADAPTER_TYPES as readonly string[]).includes(adapterType)) {
    throw new DiskError('INVAL', `unknown adapter type ${JSON.stringify(adapterType)}`, { path, field: 'adapterType', expected: ADAPTER_TYPES.join(', ') });
  }
  const hw = String(opts.hwVersion ?? 4);
  if (!/^\d{1,3}$/.test(hw)) throw new DiskError('INVAL', `bad hardware version ${JSON.stringify(hw)}`, { path, field: 'hwVersion' });
  if (type === 'monolithicSparse' && sectors > MAX_MONOLITHIC_SPARSE_SECTORS) {
    throw new DiskError('INVAL', 'a monolithicSparse disk holds at most about 2 TiB; use twoGbMaxExtentSparse', { path, field: 'capacity', found: opts.capacity });
  }

  const dir = dirname(path);
  const stem = basename(path).replace(/\.vmdk$/i, '');
  const extentFile = (suffix: string) => `${stem}${suffix}.vmdk`;
  const lines: ExtentLine[] = [];
  if (type === 'monolithicSparse') {
    lines.push({ access: 'RW', sectorCount: sectors, type: 'SPARSE', fileName: basename(path), offsetSectors: 0 });
  } else if (type === 'monolithicFlat' || type === 'vmfs') {
    lines.push({ access: 'RW', sectorCount: sectors, type: type === 'vmfs' ? 'VMFS' : 'FLAT', fileName: extentFile('-flat'), offsetSectors: 0 });
  } else {
    const letter = type === 'twoGbMaxExtentSparse' ? 's' : 'f';
    const count = ceilDiv(sectors, SPLIT_EXTENT_SECTORS);
    for (let i = 0; i < count; i++) {
      const n = Math.min(SPLIT_EXTENT_SECTORS, sectors - i * SPLIT_EXTENT_SECTORS);
      lines.push({
        access: 'RW',
        sectorCount: n,
        type: letter === 's' ? 'SPARSE' : 'FLAT',
        fileName: extentFile(`-${letter}${String(i + 1).padStart(3, '0')}`),
        offsetSectors: 0,
      });
    }
  }

  const cid = newCid();
  const thin = opts.thin ?? opts.type?.toLowerCase() === 'vmfsthin';
  let ddb = newDdb(cid, sectors, { adapterType, hwVersion: hw, esx, thin: esx && thin });
  if (opts.parent) {
    if (type !== 'monolithicSparse' && type !== 'twoGbMaxExtentSparse') {
      throw new DiskError('INVAL', 'a child disk must be monolithicSparse or twoGbMaxExtentSparse', { path, field: 'type', found: type });
    }
    // A child describes the same disk as its parent: it keeps the parent's adapter, geometry,
    // hardware version and uuid; only its content IDs are its own.
    const inherited = new Map(opts.parent.copyMetadata ?? []);
    inherited.delete('longContentID');
    ddb = ddb.map(([k, v]) => [k, inherited.get(k) ?? v] as [string, string]);
    for (const [k, v] of inherited) if (!ddb.some(([x]) => x === k)) ddb.push([k, v]);
  }
  const descriptor = Descriptor.build({
    cid,
    createType: type,
    extents: lines,
    ddb,
    parentCid: opts.parent ? parseCid(opts.parent.parentId, path, 'parentCID') : undefined,
    parentFileNameHint: opts.parent?.hint,
  });

  const created: string[] = [];
  const createFile = async (p: string) => {
    const st = await ns.create(p, { overwrite: !!opts.overwrite });
    created.push(p);
    return st;
  };
  try {
    if (type === 'monolithicSparse') {
      const st = await createFile(path);
      try {
        await writeFreshSparse(st, sectors, { descriptor: descriptor.toString(), descriptorSectors: 20, grainSectors });
        await st.flush();
      } finally {
        await st.close();
      }
    } else {
      for (const line of lines) {
        const st = await createFile(join(dir, line.fileName!));
        try {
          if (line.type === 'SPARSE') {
            await writeFreshSparse(st, line.sectorCount, { grainSectors });
          } else {
            await st.truncate(line.sectorCount * SECTOR_SIZE);
            if (opts.preallocate) await zeroFill(st, line.sectorCount * SECTOR_SIZE);
          }
          await st.flush();
        } finally {
          await st.close();
        }
      }
      // The descriptor last: until it exists, no tool sees a half-made disk.
      const st = await createFile(path);
      try {
        await st.write(0, Buffer.from(descriptor.toString(), 'utf8'));
        await st.flush();
      } finally {
        await st.close();
      }
    }
  } catch (err) {
    for (const p of created) await ns.remove(p).catch(() => {});
    throw err;
  }
  return openVmdk(ns, path, { readOnly: false });
}

async function zeroFill(st: ByteStore, length: number): Promise<void> {
  const chunk = Buffer.alloc(Math.min(length, 8 * 1024 * 1024));
  for (let at = 0; at < length; at += chunk.length) await st.write(at, chunk.subarray(0, Math.min(chunk.length, length - at)));
}


/**
 * A raw-device disk (createType fullDevice; VirtualBox's `createmedium --variant RawDisk`, VMware's
 * "use a physical disk"): a descriptor file whose one FLAT extent names the device by its absolute
 * path, offset 0. Only on request (CreateOptions.rawDevice): nothing is written to the device.
 */
async function createRawDevice(ns: Namespace, path: string, type: string, opts: CreateOptions): Promise<VmdkImage> {
  if (opts.rawDevice === undefined) {
    throw new DiskError('NOTSUPPORTED', `a ${type} VMDK names a device or partition whose data it uses in place: created only on request, with rawDevice (--raw-device PATH)`, { path, field: 'rawDevice', found: type });
  }
  if (type !== 'fullDevice') throw new DiskError('INVAL', `a raw-device VMDK is of type fullDevice, not ${type}`, { path, field: 'type', expected: 'fullDevice', found: opts.type });
  for (const k of ['parent', 'grainSize', 'preallocate', 'thin'] as const) {
    if (opts[k] !== undefined && opts[k] !== false) throw new DiskError('INVAL', `a raw-device VMDK takes no ${k}`, { path, field: k });
  }
  const adapterType = opts.adapterType ?? 'lsilogic';
  if (!(ADAPTER_TYPES as readonly string[]).includes(adapterType)) {
    throw new DiskError('INVAL', `unknown adapter type ${JSON.stringify(adapterType)}`, { path, field: 'adapterType', expected: ADAPTER_TYPES.join(', ') });
  }
  const hw = String(opts.hwVersion ?? 4);
  if (!/^\d{1,3}$/.test(hw)) throw new DiskError('INVAL', `bad hardware version ${JSON.stringify(hw)}`, { path, field: 'hwVersion' });
  const device = ns.absolute(opts.rawDevice);
  if (/["\n\r]/.test(device)) throw new DiskError('INVAL', 'the device name cannot be written into a descriptor', { path: device, field: 'rawDevice' });
  const kind = await ns.kind(await ns.realName(device));
  if (kind !== 'device' && kind !== 'file') {
    throw new DiskError('INVAL', 'a raw-device VMDK names a block device or partition (or a regular file)', { path: device, field: 'rawDevice', found: kind });
  }
  // the store refuses character devices and anything else that is no disk
  const dev = await ns.open(device);
  let length: number;
  try {
    length = await dev.size();
  } finally {
    await dev.close();
  }
  const capacity = opts.capacity === 0 ? Math.floor(length / SECTOR_SIZE) * SECTOR_SIZE : opts.capacity;
  if (!Number.isSafeInteger(capacity) || capacity <= 0 || capacity % SECTOR_SIZE !== 0 || capacity > length) {
    throw new DiskError('INVAL', 'capacity must be whole sectors within the device (0: the whole device)', { path: device, field: 'capacity', expected: `512..${length}, a multiple of 512`, found: opts.capacity });
  }
  const sectors = capacity / SECTOR_SIZE;
  const cid = newCid();
  const descriptor = Descriptor.build({
    cid,
    createType: 'fullDevice',
    extents: [{ access: 'RW', sectorCount: sectors, type: 'FLAT', fileName: device, offsetSectors: 0 }],
    ddb: newDdb(cid, sectors, { adapterType, hwVersion: hw }),
  });
  const st = await ns.create(path, { overwrite: !!opts.overwrite });
  try {
    await st.write(0, Buffer.from(descriptor.toString(), 'utf8'));
    await st.flush();
    await st.close();
  } catch (err) {
    await st.close().catch(() => {});
    await ns.remove(path).catch(() => {});
    throw err;
  }
  return openVmdk(ns, path, { readOnly: false, allowRawDevice: true });
}
