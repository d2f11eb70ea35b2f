/**
 * The operations the crash explorer runs, per format. Each scenario builds its starting files
 * in a MemoryNamespace (not recorded), then runs the operation through a RecordingNamespace,
 * marking each point where the operation has promised something: after mark k the disk named
 * `target` must read as `models[k]` (before mark k+1 a sector may read as models[k] or
 * models[k+1]). Content-preserving operations have equal models before and after.
 */
import {
  Disk,
  DiskError,
  backends,
  checkDisk,
  commit,
  compact,
  convert,
  createChild,
  defragment,
  rebase,
  resize,
  settableProperties,
  createSnapshot,
  amend,
  applySnapshot,
  deleteSnapshot,
  type DiskProperties,
  MemoryNamespace,
  type Namespace,
} from '../../src/index.js';
import type { RecordingNamespace } from '../../src/storage/recording.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const CAPACITY = 4 * MiB;

export interface FormatSpec {
  /** label: vmdk-mono, vmdk-2gb, vdi, vhd, vhdx, qcow2 */
  name: string;
  format: string;
  type?: string;
  ext: string;
  /** qemu-img's name for the format (a sample of states is checked by it too) */
  qemu: string;
  /** allocation unit (data writes are laid out in these) */
  unit: number;
  create: Record<string, unknown>;
}

export const FORMATS: FormatSpec[] = [
  { name: 'vmdk-mono', format: 'vmdk', type: 'monolithicSparse', ext: 'vmdk', qemu: 'vmdk', unit: 64 * KiB, create: {} },
  { name: 'vmdk-2gb', format: 'vmdk', type: 'twoGbMaxExtentSparse', ext: 'vmdk', qemu: 'vmdk', unit: 64 * KiB, create: {} },
  { name: 'vdi', format: 'vdi', ext: 'vdi', qemu: 'vdi', unit: MiB, create: {} },
  { name: 'vhd', format: 'vhd', ext: 'vhd', qemu: 'vpc', unit: 2 * MiB, create: {} },
  { name: 'vhdx', format: 'vhdx', ext: 'vhdx', qemu: 'vhdx', unit: MiB, create: { blockSize: MiB } },
  { name: 'qcow2', format: 'qcow2', ext: 'qcow2', qemu: 'qcow2', unit: 64 * KiB, create: {} },
];

export interface Model {
  capacity: number;
  data: Buffer;
}

export interface Scenario {
  /** the disk that must read as the models (for a chain: its top) */
  target: string;
  /** where the format and type come from for checks */
  spec: FormatSpec;
  /** the target may be missing while fewer marks than this were made (convert: before its rename) */
  missingBefore?: number;
  /** after a cut: what a user does before reading (resume an interrupted commit) */
  recover?: (ns: Namespace) => Promise<void>;
  /** checked too, for the same model, once the operation finished (commit: the base) */
  alsoAfter?: string;
}

export interface Operation {
  name: string;
  /** why it does not apply to this format, or undefined */
  skip?: (f: FormatSpec) => string | undefined;
  /** build the starting files (unrecorded) */
  prepare: (ns: MemoryNamespace, f: FormatSpec) => Promise<Scenario>;
  /** run it through `rec` (marking promises); the models, models[0] being the disk before */
  run: (rec: RecordingNamespace, s: Scenario, before: Model) => Promise<Model[]>;
}

const caps = (f: FormatSpec) => backends().find((b) => b.name === f.format)!.capabilities;
const diskName = (f: FormatSpec, base = 'disk') => `/img/${base}.${f.ext}`;

async function make(ns: Namespace, name: string, f: FormatSpec, opts: Record<string, unknown> = {}): Promise<Disk> {
  return Disk.create(name, { namespace: ns, format: f.format, type: f.type, capacity: CAPACITY, ...f.create, ...opts });
}

/** Write `pieces` (offset, seed, length) and close. */
async function fill(d: Disk, pieces: [number, number, number][]): Promise<void> {
  for (const [offset, seed, length] of pieces) await d.write(offset, xorshiftBytes(length, seed));
  await d.close();
}

/** What the disk named reads as now. */
export async function readModel(ns: Namespace, name: string): Promise<Model> {
  const d = await Disk.open(name, { namespace: ns, readOnly: true });
  try {
    return { capacity: d.capacity, data: await d.read(0, d.capacity) };
  } finally {
    await d.close();
  }
}

/** data in the first unit and in the third quarter of the disk, the rest unallocated */
async function sparseDisk(ns: Namespace, f: FormatSpec, name = diskName(f)): Promise<Scenario> {
  await fill(await make(ns, name, f), [
    [0, 1, 96 * KiB],
    [CAPACITY / 2 + 8 * KiB, 2, 200 * KiB],
  ]);
  return { target: name, spec: f };
}

/** Rounds of writes (each flushed, then marked); `where` picks each write's place. */
async function writeRounds(rec: RecordingNamespace, s: Scenario, before: Model, seed: number, where: (rnd: () => number, length: number) => number): Promise<Model[]> {
  const rnd = mulberry32(seed);
  const models = [before];
  const d = await Disk.open(s.target, { namespace: rec });
  for (let r = 0; r < 3; r++) {
    const m = Buffer.from(models.at(-1)!.data);
    // no two writes of a round overlap: a state may hold any of them, and the models say only
    // "before the round" or "after it" for each sector
    const used: [number, number][] = [];
    for (let w = 0; w < 3; w++) {
      const length = (1 + Math.floor(rnd() * 24)) * 512 * (rnd() < 0.3 ? 16 : 1);
      const offset = where(rnd, length);
      if (used.some(([a, b]) => offset < b && a < offset + length)) continue;
      used.push([offset, offset + length]);
      const data = xorshiftBytes(length, 1000 + r * 10 + w);
      await d.write(offset, data);
      data.copy(m, offset);
    }
    await d.flush();
    rec.mark(`round ${r}`);
    models.push({ capacity: before.capacity, data: m });
  }
  await d.close();
  return models;
}

const sectorIn = (rnd: () => number, lo: number, hi: number, length: number) => lo + Math.floor(rnd() * ((hi - lo - length) / 512)) * 512;

/** the same model once more: an operation that must not change what the disk reads */
/** the content the snapshot-apply scenario's snapshot holds: the sparse disk (sparseDisk's pieces) */
async function readSnapshotModel(s: Scenario): Promise<Model> {
  const m = new MemoryNamespace();
  await sparseDisk(m, s.spec, '/model.' + s.spec.ext);
  return readModel(m, '/model.' + s.spec.ext);
}

const same = (m: Model) => [m, { capacity: m.capacity, data: m.data }];

export const OPERATIONS: Operation[] = [
  {
    name: 'write-alloc',
    prepare: (ns, f) => sparseDisk(ns, f),
    // into the unallocated second quarter and the end
    run: (rec, s, before) => writeRounds(rec, s, before, 11, (rnd, len) => (rnd() < 0.5 ? sectorIn(rnd, CAPACITY / 4, CAPACITY / 2, len) : sectorIn(rnd, (3 * CAPACITY) / 4, CAPACITY, len))),
  },
  {
    name: 'write-overwrite',
    prepare: async (ns, f) => {
      const name = diskName(f);
      await fill(await make(ns, name, f), [[0, 3, CAPACITY]]);
      return { target: name, spec: f };
    },
    run: (rec, s, before) => writeRounds(rec, s, before, 12, (rnd, len) => sectorIn(rnd, 0, CAPACITY, len)),
  },
  {
    name: 'resize-grow',
    skip: (f) => (caps(f).resize === 'none' ? `${f.format} images cannot be resized` : undefined),
    prepare: (ns, f) => sparseDisk(ns, f),
    run: async (rec, s, before) => {
      await resize(s.target, 2 * CAPACITY, { namespace: rec });
      rec.mark('resized');
      const data = Buffer.alloc(2 * CAPACITY);
      before.data.copy(data);
      return [before, { capacity: 2 * CAPACITY, data }];
    },
  },
  {
    name: 'resize-shrink',
    skip: (f) => (caps(f).resize !== 'grow-shrink' ? `${f.format} images cannot be shrunk` : undefined),
    prepare: async (ns, f) => {
      const name = diskName(f);
      await fill(await make(ns, name, f), [[0, 4, 300 * KiB]]);
      return { target: name, spec: f };
    },
    run: async (rec, s, before) => {
      await resize(s.target, CAPACITY / 2, { namespace: rec, shrink: true });
      rec.mark('resized');
      return [before, { capacity: CAPACITY / 2, data: before.data.subarray(0, CAPACITY / 2) }];
    },
  },
  {
    name: 'compact',
    skip: (f) => (caps(f).compact !== 'native' ? `${f.format} has no compact` : undefined),
    prepare: async (ns, f) => {
      // data everywhere, then zeros over every other unit: compact gives those back
      const name = diskName(f);
      const d = await make(ns, name, f);
      await d.write(0, xorshiftBytes(CAPACITY, 5));
      for (let at = f.unit; at < CAPACITY; at += 2 * f.unit) await d.write(at, Buffer.alloc(f.unit));
      await d.close();
      return { target: name, spec: f };
    },
    run: async (rec, s, before) => {
      await compact(s.target, { namespace: rec });
      rec.mark('compacted');
      return same(before);
    },
  },
  {
    name: 'defragment',
    skip: (f) => (caps(f).defragment !== 'native' ? `${f.format} has no defragment` : undefined),
    prepare: async (ns, f) => {
      // units written last to first: the file holds them in reverse order
      const name = diskName(f);
      const d = await make(ns, name, f);
      for (let at = CAPACITY - f.unit; at >= 0; at -= 2 * f.unit) await d.write(at, xorshiftBytes(f.unit, 6 + at / f.unit));
      await d.close();
      return { target: name, spec: f };
    },
    run: async (rec, s, before) => {
      await defragment(s.target, { namespace: rec });
      rec.mark('defragmented');
      return same(before);
    },
  },
  {
    name: 'commit',
    skip: (f) => (!caps(f).differencing ? `${f.format} has no children` : undefined),
    prepare: async (ns, f) => {
      const base = diskName(f, 'base');
      await sparseDisk(ns, f, base);
      const top = diskName(f, 'top');
      await fill(await createChild(base, top, { namespace: ns }), [
        [64 * KiB, 7, 128 * KiB],
        [CAPACITY / 2, 8, 64 * KiB],
        [CAPACITY - 80 * KiB, 9, 80 * KiB],
      ]);
      return {
        target: top,
        spec: f,
        alsoAfter: base,
        recover: async (ns) => {
          // an interrupted commit is finished by running it again (its journal says how far it
          // got), after `check -r` of the base where a write into it was cut off
          const journals = (await ns.list('/img')).filter((n) => n.includes('journal') || n.includes('commit'));
          if (journals.length === 0 || !(await ns.exists(top))) return;
          try {
            await commit(top, { namespace: ns });
          } catch (err) {
            if (!(err instanceof DiskError) || err.code !== 'NEEDSREPAIR') throw err;
            await checkDisk(base, { namespace: ns, repair: true, chain: false });
            await commit(top, { namespace: ns });
          }
        },
      };
    },
    run: async (rec, s, before) => {
      await commit(s.target, { namespace: rec });
      rec.mark('committed');
      return same(before);
    },
  },
  {
    name: 'rebase',
    skip: (f) => (!caps(f).differencing ? `${f.format} has no children` : undefined),
    prepare: async (ns, f) => {
      const base = diskName(f, 'base');
      await sparseDisk(ns, f, base);
      // the new parent: the same disk with other bytes in some places
      const other = diskName(f, 'other');
      await sparseDisk(ns, f, other);
      await fill(await Disk.open(other, { namespace: ns }), [[CAPACITY / 4, 10, 256 * KiB]]);
      const top = diskName(f, 'top');
      await fill(await createChild(base, top, { namespace: ns }), [[CAPACITY / 2, 8, 64 * KiB]]);
      return { target: top, spec: f };
    },
    run: async (rec, s, before) => {
      await rebase(s.target, diskName(s.spec, 'other'), { namespace: rec });
      rec.mark('rebased');
      return same(before);
    },
  },
  {
    name: 'repair',
    skip: (f) => (caps(f).check !== 'repair' ? `${f.format} check cannot repair` : undefined),
    prepare: async (ns, f) => {
      // a leak: bytes past the last structure (a stopped allocation leaves these)
      const s = await sparseDisk(ns, f);
      const files = (await (await Disk.open(s.target, { namespace: ns, readOnly: true })).info()).files;
      const data = files.find((n) => n !== s.target || f.type !== 'twoGbMaxExtentSparse') ?? s.target;
      const st = await ns.open(data, { write: true });
      const size = await st.size();
      const tail = f.format === 'vhd' ? await st.read(size - 512, 512) : undefined;
      await st.write(size - (tail ? 512 : 0), Buffer.concat([Buffer.alloc(f.unit, 0x77), tail ?? Buffer.alloc(0)]));
      await st.close();
      return s;
    },
    run: async (rec, s, before) => {
      await checkDisk(s.target, { namespace: rec, repair: true });
      rec.mark('repaired');
      return same(before);
    },
  },
  {
    name: 'convert',
    prepare: async (ns, f) => {
      const src = '/img/source.qcow2';
      await fill(await Disk.create(src, { namespace: ns, format: 'qcow2', capacity: CAPACITY }), [
        [0, 1, 96 * KiB],
        [CAPACITY / 2 + 8 * KiB, 2, 200 * KiB],
      ]);
      return { target: diskName(f, 'converted'), spec: f, missingBefore: 1 };
    },
    run: async (rec, s) => {
      const src = await Disk.open('/img/source.qcow2', { namespace: rec, readOnly: true });
      const m = { capacity: src.capacity, data: await src.read(0, src.capacity) };
      await convert(src, s.target, { namespace: rec, format: s.spec.format, type: s.spec.type, ...s.spec.create });
      await src.close();
      rec.mark('converted');
      return [m, m];
    },
  },
  {
    name: 'snapshot-create',
    skip: (f) => (f.format !== 'qcow2' ? `${f.format} has no internal snapshots` : undefined),
    prepare: (ns, f) => sparseDisk(ns, f),
    run: async (rec, s, before) => {
      await createSnapshot(s.target, 'crash', { namespace: rec });
      rec.mark('snapshot taken');
      return same(before);
    },
  },
  {
    name: 'snapshot-apply',
    skip: (f) => (f.format !== 'qcow2' ? `${f.format} has no internal snapshots` : undefined),
    prepare: async (ns, f) => {
      // a snapshot of the sparse disk, then writes over its data and elsewhere
      const s = await sparseDisk(ns, f);
      await createSnapshot(s.target, 'base', { namespace: ns });
      await fill(await Disk.open(s.target, { namespace: ns }), [
        [32 * KiB, 3, 128 * KiB],
        [CAPACITY / 4, 4, 64 * KiB],
      ]);
      return s;
    },
    run: async (rec, s, before) => {
      const snap = await readSnapshotModel(s);
      await applySnapshot(s.target, 'base', { namespace: rec });
      rec.mark('applied');
      return [before, snap];
    },
  },
  {
    name: 'snapshot-delete',
    skip: (f) => (f.format !== 'qcow2' ? `${f.format} has no internal snapshots` : undefined),
    prepare: async (ns, f) => {
      const s = await sparseDisk(ns, f);
      await createSnapshot(s.target, 'old', { namespace: ns });
      await fill(await Disk.open(s.target, { namespace: ns }), [[0, 5, 64 * KiB]]);
      return s;
    },
    run: async (rec, s, before) => {
      await deleteSnapshot(s.target, 'old', { namespace: rec });
      rec.mark('deleted');
      return same(before);
    },
  },
  {
    name: 'amend',
    skip: (f) => (!backends().find((b) => b.name === f.format)?.amendOptions?.some((o) => o.name === 'refcount_bits') ? `${f.format} has no refcount width to amend` : undefined),
    prepare: (ns, f) => sparseDisk(ns, f),
    run: async (rec, s, before) => {
      // the refcount structure rewritten at another width, then back to 16 bits and version 2
      await amend(s.target, { refcount_bits: '4' }, { namespace: rec });
      rec.mark('refcount_bits=4');
      await amend(s.target, { compat: '0.10', refcount_bits: '16' }, { namespace: rec });
      rec.mark('compat=0.10');
      return [before, before, before];
    },
  },
  {
    name: 'metadata',
    prepare: (ns, f) => sparseDisk(ns, f),
    run: async (rec, s, before) => {
      // every property the format lets one set (identity, comment, geometry): the content stays
      const d = await Disk.open(s.target, { namespace: rec });
      const settable = settableProperties(s.spec.format);
      const props: DiskProperties = {};
      if (settable.includes('uuid')) props.uuid = '6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f';
      if (settable.includes('comment')) props.comment = 'crash explorer';
      if (settable.includes('adapterType') && s.spec.format === 'vmdk') props.adapterType = 'lsilogic';
      await d.setProperties(props);
      await d.flush();
      await d.close();
      rec.mark('metadata');
      return same(before);
    },
  },
];
