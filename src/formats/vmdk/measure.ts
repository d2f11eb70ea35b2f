/**
 * Measure layout of a VMDK of each createType, from the layout functions createVmdk and the
 * sparse extent use (freshSparseLayout, SPLIT_EXTENT_SECTORS, the descriptor builder):
 *
 *   monolithicSparse      header + 20-sector embedded descriptor + RGD/GD and every grain table
 *                         (overHead, all written at create), then one 64 KiB grain per grain written
 *   twoGbMaxExtentSparse  descriptor file + per extent its own overHead, plus the grains
 *   monolithicFlat, twoGbMaxExtentFlat, vmfs
 *                         descriptor file + the whole capacity in flat files (exact)
 *   vmfsThin              as vmfs for the files; `required` is what a thin disk takes on a VMFS
 *                         datastore: the data rounded to VMFS's 1 MiB file blocks
 *   streamOptimized       an upper bound: every grain written stored as if it did not compress
 *                         (deflate's worst case plus the 12-byte marker, padded to a sector), plus
 *                         header/descriptor (one 64 KiB grain), every grain table with its marker,
 *                         the GD, footer and end-of-stream markers
 *
 * A descriptor file's length depends on the file names in it: `name` (the target's file name)
 * makes it exact; without it a 16-character stem is assumed.
 */
import { basename } from '../../core/names.js';
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE, ceilDiv, roundUp } from '../../core/ints.js';
import { groupsTouched, unitCount } from '../common/measure.js';
import type { CreateOptions, MeasureLayout, UnitRun } from '../types.js';
import { Descriptor, type ExtentLine } from './descriptor.js';
import { ADAPTER_TYPES, DEFAULT_GRAIN_SECTORS, SPLIT_EXTENT_SECTORS, freshSparseLayout, grainSectorsOf, newCid, newDdb, normaliseCreateType } from './layout.js';

/** the grain of streams and of the default hosted sparse disk (64 KiB) */
const GRAIN_SECTORS = DEFAULT_GRAIN_SECTORS;
const GRAIN = GRAIN_SECTORS * SECTOR_SIZE;
const GTES = 512;
/** the VMFS file block size (VMFS 5 and 6) */
const VMFS_BLOCK = 1024 * 1024;
/** zlib's deflateBound for a 64 KiB grain (default window and memory level) */
const DEFLATE_BOUND = GRAIN + (GRAIN >> 12) + (GRAIN >> 14) + (GRAIN >> 25) + 13;
/** a stream grain at worst: 12-byte marker (LBA + size) + deflate output, padded to a sector */
const STREAM_GRAIN = roundUp(12 + DEFLATE_BOUND, SECTOR_SIZE);

export function measureVmdk(opts: CreateOptions, name = 'vdkit-measure-xx.vmdk'): MeasureLayout {
  const type = normaliseCreateType(opts.type);
  const known = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'vmfs', 'streamOptimized'];
  if (!known.includes(type)) throw new DiskError('INVAL', `unknown VMDK type ${JSON.stringify(opts.type)}`, { field: 'type', expected: known.join(', ') });
  if (!Number.isSafeInteger(opts.capacity) || opts.capacity <= 0) throw new DiskError('INVAL', 'capacity must be a positive whole number of bytes', { field: 'capacity', found: opts.capacity });
  const adapterType = opts.adapterType ?? 'lsilogic';
  if (!(ADAPTER_TYPES as readonly string[]).includes(adapterType)) throw new DiskError('INVAL', `unknown adapter type ${JSON.stringify(adapterType)}`, { field: 'adapterType', expected: ADAPTER_TYPES.join(', ') });
  const sectors = ceilDiv(opts.capacity, SECTOR_SIZE);
  const capacity = sectors * SECTOR_SIZE;
  const grains = ceilDiv(sectors, GRAIN_SECTORS);
  // the hosted sparse types take a grain size (createVmdk refuses it for the others, and so do we)
  const sparseType = type === 'monolithicSparse' || type === 'twoGbMaxExtentSparse';
  if (opts.grainSize !== undefined && !sparseType && !(type === 'streamOptimized' && opts.grainSize === GRAIN)) {
    throw new DiskError('INVAL', `a ${type} disk takes no grain size other than its own`, { field: 'grainSize', found: opts.grainSize });
  }
  const grainSectors = grainSectorsOf(opts.grainSize);
  const grain = grainSectors * SECTOR_SIZE;
  const sparseGrains = ceilDiv(sectors, grainSectors);

  if (type === 'monolithicSparse') {
    const head = freshSparseLayout(sectors, { embeddedDescriptorSectors: 20, grainSectors }).overHead * SECTOR_SIZE;
    return { capacity, unit: grain, required: (runs) => head + unitCount(runs) * grain, fullyAllocated: head + sparseGrains * grain, notes: [] };
  }
  if (type === 'streamOptimized') {
    const gtCount = ceilDiv(grains, GTES);
    const gdSectors = ceilDiv(gtCount * 4, SECTOR_SIZE);
    const gtSectors = ceilDiv(GTES * 4, SECTOR_SIZE);
    // header + embedded descriptor, every GT with its marker, GD marker + GD, footer marker + footer, EOS
    const meta = GRAIN + gtCount * (1 + gtSectors) * SECTOR_SIZE + (1 + gdSectors) * SECTOR_SIZE + 2 * SECTOR_SIZE + SECTOR_SIZE;
    return {
      capacity,
      unit: GRAIN,
      required: (runs) => meta + unitCount(runs) * STREAM_GRAIN,
      fullyAllocated: meta + grains * STREAM_GRAIN,
      notes: ['streamOptimized: an upper bound, every grain counted as if it did not compress (deflate\'s worst case); the real file is usually much smaller'],
    };
  }

  const stem = basename(name).replace(/\.vmdk$/i, '');
  const thin = type === 'vmfs' && (opts.thin ?? opts.type?.toLowerCase() === 'vmfsthin');
  const lines: ExtentLine[] = [];
  if (type === 'monolithicFlat' || type === 'vmfs') {
    lines.push({ access: 'RW', sectorCount: sectors, type: type === 'vmfs' ? 'VMFS' : 'FLAT', fileName: `${stem}-flat.vmdk`, offsetSectors: 0 });
  } else {
    const letter = type === 'twoGbMaxExtentSparse' ? 's' : 'f';
    for (let i = 0; i * SPLIT_EXTENT_SECTORS < sectors; i++) {
      lines.push({
        access: 'RW',
        sectorCount: Math.min(SPLIT_EXTENT_SECTORS, sectors - i * SPLIT_EXTENT_SECTORS),
        type: letter === 's' ? 'SPARSE' : 'FLAT',
        fileName: `${stem}-${letter}${String(i + 1).padStart(3, '0')}.vmdk`,
        offsetSectors: 0,
      });
    }
  }
  const descriptor = descriptorBytes(type, lines, sectors, adapterType, thin, String(opts.hwVersion ?? 4));

  if (type === 'twoGbMaxExtentSparse') {
    const heads = lines.reduce((a, l) => a + freshSparseLayout(l.sectorCount, { embeddedDescriptorSectors: 0, grainSectors }).overHead * SECTOR_SIZE, 0);
    // each extent's last grain is whole in its file: count grains per extent
    const perExtent = lines.reduce((a, l) => a + ceilDiv(l.sectorCount, grainSectors), 0);
    return { capacity, unit: grain, required: (runs) => descriptor + heads + unitCount(runs) * grain, fullyAllocated: descriptor + heads + perExtent * grain, notes: [] };
  }
  const files = descriptor + capacity;
  if (thin) {
    const perBlock = VMFS_BLOCK / GRAIN;
    return {
      capacity,
      unit: GRAIN,
      required: (runs: readonly UnitRun[]) => descriptor + Math.min(capacity, groupsTouched(runs, perBlock) * VMFS_BLOCK),
      fullyAllocated: files,
      notes: ['vmfsThin: required is what the thin disk takes on a VMFS datastore (its data in 1 MiB file blocks); the -flat file is written sparse but is capacity bytes long'],
    };
  }
  return { capacity, unit: capacity, required: () => files, fullyAllocated: files, notes: [] };
}

/** length of the descriptor createVmdk writes: same keys, values of the same lengths */
function descriptorBytes(type: string, extents: ExtentLine[], sectors: number, adapterType: string, thin: boolean, hw: string): number {
  const cid = newCid();
  const ddb = newDdb(cid, sectors, { adapterType, hwVersion: hw, esx: type === 'vmfs', thin });
  return Buffer.byteLength(Descriptor.build({ cid, createType: type, extents, ddb }).toString(), 'utf8');
}
