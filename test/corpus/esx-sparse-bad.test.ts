/**
 * Malformed ESXi delta extents (COWD and SESparse, vmdk.md §5), made by hand-building a small
 * good file (test/helpers/esx-sparse-builder.ts), wrapping it in a descriptor, and poking bytes
 * at the header offsets of the spec. Each must be refused with a DiskError whose code is the
 * case's, naming the extent file and the field, within 100 ms and without a big allocation
 * (crafted directory sizes must not be believed). Entries that are only read when used (grain
 * table entries) fail the reads that touch them, and leave the rest of the disk readable.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Disk, type ErrorCode } from '../../src/index.js';
import { checkDisk, openFindings } from '../../src/ops/check.js';
import type { CheckFinding } from '../../src/formats/types.js';
import { run } from '../helpers/tools.js';
import { CowdHeader, SeSparseConstHeader, SeSparseVolatileHeader } from '../../src/formats/vmdk/structs.js';
import { BuildRng, COWD, DATA, SES, SES_VOLATILE, buildCowd, buildSeSparse, esxDescriptor, writeExtent, type BuiltExtent } from '../helpers/esx-sparse-builder.js';
import { expectFailure, poke, removeTempDirs, repoRoot, sha, tempDir, u32le, u64le } from './support.js';

let root: string;
let cowd: BuiltExtent;
let ses: BuiltExtent;
let n = 0;

before(async () => {
  root = tempDir('corpus-esx');
  const rng = new BuildRng(0x5e5e);
  cowd = buildCowd(rng, { capacitySectors: 5 * 2048, grainSectors: 1, fill: 0.2 }); // 3 GTs
  ses = buildSeSparse(rng, { capacitySectors: 20 * 2048, data: 0.1, zero: 0.1, unmapped: 0.05, maxSlot: 2047 }); // 2 GTs, an 8 MiB grain area
  await writeExtent(join(root, 'c-delta.vmdk'), cowd);
  await writeExtent(join(root, 's-sesparse.vmdk'), ses);
  writeFileSync(join(root, 'c.vmdk'), esxDescriptor({ cid: '00c0d000', createType: 'vmfsSparse', extents: [{ sectors: cowd.capacitySectors, type: 'VMFSSPARSE', file: 'c-delta.vmdk' }] }));
  writeFileSync(join(root, 's.vmdk'), esxDescriptor({ cid: '005e5000', createType: 'seSparse', extents: [{ sectors: ses.capacitySectors, type: 'SESPARSE', file: 's-sesparse.vmdk' }] }));
});
after(() => removeTempDirs());

/** a fresh copy of one of the good links: { desc, extent } paths (the extent written sparse, as built) */
async function copy(kind: 'c' | 's'): Promise<{ desc: string; extent: string }> {
  const dir = join(root, `bad-${++n}`);
  mkdirSync(dir);
  const extentName = kind === 'c' ? 'c-delta.vmdk' : 's-sesparse.vmdk';
  copyFileSync(join(root, `${kind}.vmdk`), join(dir, `${kind}.vmdk`));
  await writeExtent(join(dir, extentName), kind === 'c' ? cowd : ses);
  return { desc: join(dir, `${kind}.vmdk`), extent: join(dir, extentName) };
}

/** first virtual grain of `b` holding data in grain table `g` */
function dataGrainIn(b: BuiltExtent, g: number): number {
  for (let gi = g * 4096; gi < (g + 1) * 4096; gi++) if (b.states[gi] === DATA) return gi;
  throw new Error(`no data grain in table ${g}`);
}

test('the field offsets the damage uses are those of vdkit\'s struct tables (and the spec)', () => {
  for (const f of ['numSectors', 'grainSize', 'gdOffset', 'numGDEntries', 'freeSector', 'parentGeneration', 'generation', 'name', 'description', 'savedGeneration', 'uncleanShutdown'] as const) {
    assert.equal(CowdHeader.offsetOf(f), COWD[f], `CowdHeader.${f}`);
  }
  for (const f of Object.keys(SES) as (keyof typeof SES)[]) assert.equal(SeSparseConstHeader.offsetOf(f), SES[f], `SeSparseConstHeader.${f}`);
  for (const f of Object.keys(SES_VOLATILE) as (keyof typeof SES_VOLATILE)[]) assert.equal(SeSparseVolatileHeader.offsetOf(f), SES_VOLATILE[f], `SeSparseVolatileHeader.${f}`);
  assert.equal(CowdHeader.size, 2048);
  assert.equal(SeSparseConstHeader.size, 512);
  assert.equal(SeSparseVolatileHeader.size, 512);
});

interface Case {
  name: string;
  kind: 'c' | 's';
  damage: (extent: string) => Promise<void> | void;
  code: ErrorCode;
  field: string | RegExp;
  message?: RegExp;
}

const SES_VOL = () => 512; // the builder puts the volatile header at sector 1
const cowdGd = (i: number) => cowd.at.gd + 4 * i;
const sesGd = (i: number) => ses.at.gd + 8 * i;

const CASES: Case[] = [
  // ---- COWD
  { name: 'COWD truncated inside its header', kind: 'c', damage: (p) => truncateSync(p, 1000), code: 'INVALIDDISK', field: 'file length', message: /too short/ },
  { name: 'COWD grainSize 0', kind: 'c', damage: (p) => poke(p, COWD.grainSize, u32le(0)), code: 'CORRUPT', field: 'grainSize' },
  { name: 'COWD grainSize 4096 (above 1 MiB)', kind: 'c', damage: (p) => poke(p, COWD.grainSize, u32le(4096)), code: 'CORRUPT', field: 'grainSize' },
  { name: 'COWD numSectors 0', kind: 'c', damage: (p) => poke(p, COWD.numSectors, u32le(0)), code: 'CORRUPT', field: 'numSectors' },
  { name: 'COWD numSectors below the extent line', kind: 'c', damage: (p) => poke(p, COWD.numSectors, u32le(100)), code: 'CORRUPT', field: 'numSectors', message: /extent line is larger/ },
  { name: 'COWD GD past EOF (gdOffset 2^24-1)', kind: 'c', damage: (p) => poke(p, COWD.gdOffset, u32le(0xffffff)), code: 'CORRUPT', field: 'gdOffset', message: /past the end/ },
  { name: 'COWD GD over the header (gdOffset 1)', kind: 'c', damage: (p) => poke(p, COWD.gdOffset, u32le(1)), code: 'CORRUPT', field: 'gdOffset' },
  { name: 'COWD huge numGDEntries (2^32-1: a 16 GiB directory)', kind: 'c', damage: (p) => poke(p, COWD.numGDEntries, u32le(0xffffffff)), code: 'CORRUPT', field: 'numGDEntries', message: /past the end/ },
  { name: 'COWD numGDEntries too small for the capacity', kind: 'c', damage: (p) => poke(p, COWD.numGDEntries, u32le(1)), code: 'CORRUPT', field: 'numGDEntries' },
  { name: 'COWD freeSector past EOF (file truncated)', kind: 'c', damage: (p) => poke(p, COWD.freeSector, u32le(0x7fffffff)), code: 'CORRUPT', field: 'freeSector', message: /truncated/ },
  { name: 'COWD GT past EOF (GDE[1])', kind: 'c', damage: (p) => poke(p, cowdGd(1), u32le(0x00ffffff)), code: 'CORRUPT', field: 'GDE[1]', message: /past the end/ },
  { name: 'COWD GT over the header (GDE[0] = 2)', kind: 'c', damage: (p) => poke(p, cowdGd(0), u32le(2)), code: 'CORRUPT', field: 'GDE[0]' },
  { name: 'COWD two GDEs naming one GT', kind: 'c', damage: (p) => poke(p, cowdGd(2), u32le(cowd.at.tables[0]! / 512)), code: 'CORRUPT', field: 'GDE', message: /overlapping/ },
  { name: 'COWD file cut (freeSector past EOF)', kind: 'c', damage: (p) => truncateSync(p, Math.max(...cowd.at.tables) + 1024), code: 'CORRUPT', field: 'freeSector', message: /truncated/ },
  {
    name: 'COWD file cut inside a grain table (freeSector cut to match)',
    kind: 'c',
    damage: async (p) => {
      const cut = Math.max(...cowd.at.tables) + 1024;
      truncateSync(p, cut);
      await poke(p, COWD.freeSector, u32le(cut / 512));
    },
    code: 'CORRUPT',
    field: /^GDE\[\d\]$/,
    message: /past the end/,
  },
  // ---- SESparse
  { name: 'SESparse truncated inside its header', kind: 's', damage: (p) => truncateSync(p, 100), code: 'INVALIDDISK', field: 'file length', message: /too short/ },
  { name: 'SESparse bad magic', kind: 's', damage: (p) => poke(p, SES.magic, u64le(0xcafebabfn)), code: 'INVALIDDISK', field: 'magic' },
  { name: 'SESparse version 3.0', kind: 's', damage: (p) => poke(p, SES.version, u64le(0x0000000300000000n)), code: 'UNSUPPORTEDDISKVERSION', field: 'version' },
  { name: 'SESparse grainSize 16', kind: 's', damage: (p) => poke(p, SES.grainSize, u64le(16n)), code: 'UNSUPPORTEDFEATURE', field: 'grainSize' },
  { name: 'SESparse grainTableSize 32', kind: 's', damage: (p) => poke(p, SES.grainTableSize, u64le(32n)), code: 'UNSUPPORTEDFEATURE', field: 'grainTableSize' },
  { name: 'SESparse flags 1', kind: 's', damage: (p) => poke(p, SES.flags, u64le(1n)), code: 'UNSUPPORTEDFEATURE', field: 'flags' },
  { name: 'SESparse reserved3 non-zero', kind: 's', damage: (p) => poke(p, SES.reserved3, u64le(7n)), code: 'UNSUPPORTEDFEATURE', field: 'reserved3' },
  { name: 'SESparse non-zero pad', kind: 's', damage: (p) => poke(p, 500, [0x01]), code: 'UNSUPPORTEDFEATURE', field: 'pad', message: /padding/ },
  { name: 'SESparse capacity 2^60 (unsafe integer)', kind: 's', damage: (p) => poke(p, SES.capacity, u64le(2n ** 60n)), code: 'CORRUPT', field: 'capacity' },
  { name: 'SESparse capacity 2^40 sectors (above 64 TiB)', kind: 's', damage: (p) => poke(p, SES.capacity, u64le(2n ** 40n)), code: 'CORRUPT', field: 'capacity' },
  { name: 'SESparse capacity 2^36 sectors: GD too small for it', kind: 's', damage: (p) => poke(p, SES.capacity, u64le(2n ** 36n)), code: 'CORRUPT', field: 'grainDirSize' },
  {
    name: 'SESparse capacity 2^36 sectors and a GD size to match: a 16 MiB directory past EOF, not read',
    kind: 's',
    damage: async (p) => {
      await poke(p, SES.capacity, u64le(2n ** 36n));
      await poke(p, SES.grainDirSize, u64le(2n ** 20n));
    },
    code: 'CORRUPT',
    field: 'grainDirOffset',
    message: /past the end/,
  },
  { name: 'SESparse GD size running into the grain tables', kind: 's', damage: (p) => poke(p, SES.grainDirSize, u64le(100n)), code: 'CORRUPT', field: 'grainDirSize', message: /overlaps/ },
  {
    name: 'SESparse capacity 2^36 sectors, a GD to match placed after everything: past EOF, not allocated',
    kind: 's',
    damage: async (p) => {
      await poke(p, SES.capacity, u64le(2n ** 36n));
      await poke(p, SES.grainDirSize, u64le(2n ** 20n));
      await poke(p, SES.grainDirOffset, u64le(BigInt(Math.ceil(ses.fileLength / 512))));
    },
    code: 'CORRUPT',
    field: 'grainDirOffset',
    message: /past the end/,
  },
  { name: 'SESparse grains start inside the grain-table area', kind: 's', damage: (p) => poke(p, SES.grainsOffset, u64le(BigInt(ses.at.tables[0]! / 512 + 1))), code: 'CORRUPT', field: 'grainsOffset' },
  { name: 'SESparse GD past EOF', kind: 's', damage: (p) => poke(p, SES.grainDirOffset, u64le(2n ** 30n)), code: 'CORRUPT', field: 'grainDirOffset', message: /past the end/ },
  { name: 'SESparse GD offset 2^62 (unsafe integer)', kind: 's', damage: (p) => poke(p, SES.grainDirOffset, u64le(2n ** 62n)), code: 'CORRUPT', field: 'grainDirOffset' },
  { name: 'SESparse volatile header past EOF', kind: 's', damage: (p) => poke(p, SES.volatileHeaderOffset, u64le(2n ** 30n)), code: 'CORRUPT', field: 'volatileHeaderOffset' },
  { name: 'SESparse volatile header bad magic', kind: 's', damage: (p) => poke(p, SES_VOL() + SES_VOLATILE.magic, u64le(0xcafebaben)), code: 'INVALIDDISK', field: 'magic', message: /SeSparseVolatileHeader/ },
  { name: 'SESparse dirty journal (replayJournal 1)', kind: 's', damage: (p) => poke(p, SES_VOL() + SES_VOLATILE.replayJournal, u64le(1n)), code: 'NEEDSREPAIR', field: 'replayJournal', message: /journal/ },
  { name: 'SESparse volatile header non-zero pad', kind: 's', damage: (p) => poke(p, SES_VOL() + 511, [0x80]), code: 'UNSUPPORTEDFEATURE', field: 'pad' },
  { name: 'SESparse grains offset 0', kind: 's', damage: (p) => poke(p, SES.grainsOffset, u64le(0n)), code: 'CORRUPT', field: 'grainsOffset' },
  { name: 'SESparse GT index out of range', kind: 's', damage: (p) => poke(p, sesGd(0), u64le(0x1000000000000000n | 1_000_000n)), code: 'CORRUPT', field: 'GDE[0]', message: /out of range/ },
  { name: 'SESparse GDE with a bad type (0x2...)', kind: 's', damage: (p) => poke(p, sesGd(1), u64le(0x2000000000000001n)), code: 'CORRUPT', field: 'GDE[1]' },
  {
    name: 'SESparse two GDEs naming one GT',
    kind: 's',
    damage: async (p) => {
      const { readAt } = await import('./support.js');
      await poke(p, sesGd(1), await readAt(p, sesGd(0), 8));
    },
    code: 'CORRUPT',
    field: 'GDE[1]',
    message: /same grain table/,
  },
  { name: 'SESparse grain-table area too small for an index (grainTablesSize 64)', kind: 's', damage: (p) => poke(p, SES.grainTablesSize, u64le(64n)), code: 'CORRUPT', field: /^GDE\[\d\]$/, message: /out of range/ },
];

for (const c of CASES) {
  test(`refused: ${c.name} -> ${c.code}`, async () => {
    const { desc, extent } = await copy(c.kind);
    await c.damage(extent);
    const digest = sha(extent);
    await expectFailure(() => Disk.open(desc, { readOnly: true }), { code: c.code, path: extent, field: c.field, message: c.message });
    assert.equal(sha(extent), digest, 'a refused open leaves the file untouched');
  });
}

test('SESparse: a read-write open -> NOTSUPPORTED naming the extent file, before reading it', async () => {
  const { desc, extent } = await copy('s');
  // even a damaged header is not looked at: the refusal comes first
  await poke(extent, SES.grainSize, u64le(0n));
  await expectFailure(() => Disk.open(desc), { code: 'NOTSUPPORTED', path: extent, field: 'extent type', message: /read-only/ });
  await expectFailure(() => Disk.open(extent), { code: 'NOTSUPPORTED', path: extent, field: 'extent type', message: /read-only/ });
});

test('COWD: a read-write open validates the header as a read-only one does (COWD is written in place)', async () => {
  const { desc, extent } = await copy('c');
  await poke(extent, COWD.grainSize, u32le(0));
  const digest = sha(extent);
  await expectFailure(() => Disk.open(desc), { code: 'CORRUPT', path: extent, field: 'grainSize' });
  await expectFailure(() => Disk.open(extent), { code: 'CORRUPT', path: extent, field: 'grainSize' });
  assert.equal(sha(extent), digest, 'a refused open leaves the file untouched');
});

interface EntryCase {
  name: string;
  kind: 'c' | 's';
  /** entry value for the first data grain of grain table 1 */
  entry: (b: BuiltExtent) => Buffer;
  message: RegExp;
}

const ENTRY_CASES: EntryCase[] = [
  { name: 'COWD grain past EOF', kind: 'c', entry: () => u32le(0x00ffffff), message: /past the end/ },
  { name: 'COWD grain inside the grain directory', kind: 'c', entry: () => u32le(4), message: /header or grain directory/ },
  { name: 'SESparse grain index past EOF', kind: 's', entry: () => u64le(0x3000000fffffffffn), message: /past the end/ },
  { name: 'SESparse grain index 2^60 (unsafe)', kind: 's', entry: () => u64le(0x3fffffffffffffffn), message: /past the end/ },
  { name: 'SESparse entry of unknown type 0x7', kind: 's', entry: () => u64le(0x7000000000000000n), message: /unknown grain table entry type/ },
  { name: 'SESparse unallocated entry with bits set', kind: 's', entry: () => u64le(5n), message: /has bits set/ },
];

for (const c of ENTRY_CASES) {
  test(`a bad grain table entry (${c.name}): open works, using that grain is CORRUPT naming GTE[n]; other grains read`, async () => {
    const b = c.kind === 'c' ? cowd : ses;
    const { desc, extent } = await copy(c.kind);
    const gi = dataGrainIn(b, 1);
    const width = c.kind === 'c' ? 4 : 8;
    await poke(extent, b.at.tables[1]! + (gi - 4096) * width, c.entry(b));
    const d = await Disk.open(desc, { readOnly: true });
    try {
      const at = gi * b.grainBytes;
      const want = { code: 'CORRUPT' as const, path: extent, field: `GTE[${gi}]`, message: c.message };
      await expectFailure(() => d.read(at, b.grainBytes), want);
      await expectFailure(() => d.read(at - 100, 300), want);
      await expectFailure(() => d.blockStatus(at, b.grainBytes), want);
      // the grain table before it is fine
      const other = dataGrainIn(b, 0);
      const got = await d.read(other * b.grainBytes, b.grainBytes);
      assert.ok(got.equals(b.content.subarray(other * b.grainBytes, (other + 1) * b.grainBytes)));
    } finally {
      await d.close();
    }
  });
}

// ------------------------------------------------------------------ check (report only)

/** the findings of a check, dry run and repair of `desc`; every run must leave the extent and descriptor as they were */
async function checkAll(desc: string, extent: string): Promise<CheckFinding[]> {
  const before = [sha(extent), sha(desc)];
  const report = await checkDisk(desc, { repair: false });
  assert.deepEqual([sha(extent), sha(desc)], before, 'a check changes no byte');
  const dry = await checkDisk(desc, { repair: true, dryRun: true });
  assert.deepEqual([sha(extent), sha(desc)], before, 'a dry-run repair changes no byte');
  const fixed = await checkDisk(desc, { repair: true });
  assert.deepEqual([sha(extent), sha(desc)], before, 'a repair changes no byte');
  for (const r of [dry, fixed]) {
    // the same findings, the problems marked as not repairable and none claimed repaired
    assert.deepEqual(r.findings.map((f) => [f.kind, f.struct, f.field]), report.findings.map((f) => [f.kind, f.struct, f.field]));
    for (const f of r.findings) {
      assert.ok(!f.repaired && !f.wouldRepair, `nothing repaired: ${f.message}`);
      assert.equal(!!f.notRepairable, f.kind !== 'warning', `not repairable, said plainly: ${f.message}`);
      if (f.kind !== 'warning') assert.match(f.message, /not repairable by vdkit/);
    }
  }
  for (const f of report.findings) assert.ok(!f.notRepairable, 'a plain check does not speak of repairs');
  return report.findings;
}

for (const kind of ['c', 's'] as const) {
  test(`check: a clean ${kind === 'c' ? 'COWD' : 'SESparse'} link (and its bare extent file) has no findings; check, dry run and repair change no byte`, async () => {
    const { desc, extent } = await copy(kind);
    assert.deepEqual(await checkAll(desc, extent), []);
    const bare = await checkDisk(extent, { repair: true });
    assert.deepEqual(bare.findings, []);
    assert.equal(bare.leakedBytes, 0);
  });
}

interface CheckCase {
  name: string;
  kind: 'c' | 's';
  damage: (extent: string) => Promise<void>;
  /** the findings (at least these; `only` = exactly these) */
  want: { kind: CheckFinding['kind']; struct: string; field: string | RegExp; message: RegExp }[];
  only?: boolean;
  leaked?: number;
}

/** file offset of the entry of virtual grain `gi` (its table must exist) */
const entryAt = (b: BuiltExtent, gi: number) => b.at.tables[Math.floor(gi / 4096)]! + (gi % 4096) * (b === cowd ? 4 : 8);
const sesEntry = (slot: number) => u64le(0x3000000000000000n | (BigInt(slot & 0xfff) << 48n) | BigInt(Math.floor(slot / 4096)));
/** the builder's grainsOffset (sectors), read back from the header it wrote */
const sesGrainsSector = () => sesHeader('grainsOffset');
const sesHeader = (field: keyof typeof SES) => Number(ses.parts.find((p) => p.offset === 0)!.data.readBigUInt64LE(SES[field]));

const CHECK_CASES: CheckCase[] = [
  // ---- COWD
  {
    name: 'COWD grain entry into the grain directory',
    kind: 'c',
    damage: (p) => poke(p, entryAt(cowd, dataGrainIn(cowd, 1)), u32le(4)),
    want: [{ kind: 'corruption', struct: 'grain table', field: 'GTE[', message: /points into the header or grain directory/ }],
  },
  {
    name: 'COWD grain entry past the end of the file',
    kind: 'c',
    damage: (p) => poke(p, entryAt(cowd, dataGrainIn(cowd, 0)), u32le(cowd.fileLength / 512 + 10)),
    want: [{ kind: 'corruption', struct: 'grain table', field: 'GTE[', message: /past the end of the file/ }],
  },
  {
    name: 'COWD two entries naming one grain',
    kind: 'c',
    damage: async (p) => {
      const a = dataGrainIn(cowd, 0);
      await poke(p, entryAt(cowd, dataGrainIn(cowd, 2)), u32le(cowd.at.grains.get(a)! / 512));
    },
    want: [
      { kind: 'corruption', struct: 'grain table', field: 'GTE[', message: /^grain \d+ overlaps grain \d+ \(sector \d+\)$/ },
      { kind: 'leak', struct: 'grain table', field: '', message: /512 bytes below freeSector/ },
    ],
    only: true,
    leaked: 512,
  },
  {
    name: 'COWD grain entry inside a grain table',
    kind: 'c',
    damage: (p) => poke(p, entryAt(cowd, dataGrainIn(cowd, 1)), u32le(cowd.at.tables[0]! / 512 + 7)),
    want: [{ kind: 'corruption', struct: 'grain table', field: 'GTE[', message: /overlaps grain table 0 \(sector \d+\)/ }],
  },
  {
    name: 'COWD freeSector below the grains in use',
    kind: 'c',
    damage: (p) => poke(p, COWD.freeSector, u32le(cowd.fileLength / 512 - 3)),
    want: [{ kind: 'corruption', struct: 'CowdHeader', field: 'freeSector', message: /ESXi would allocate over them/ }],
    only: true,
  },
  {
    name: 'COWD a grain no entry uses (leak)',
    kind: 'c',
    damage: (p) => poke(p, entryAt(cowd, dataGrainIn(cowd, 1)), u32le(0)),
    want: [{ kind: 'leak', struct: 'grain table', field: '', message: /^512 bytes below freeSector are used by no grain or grain table$/ }],
    only: true,
    leaked: 512,
  },
  {
    name: 'COWD numGDEntries larger than the capacity needs, an extra entry set',
    kind: 'c',
    damage: async (p) => {
      await poke(p, COWD.numGDEntries, u32le(5));
      await poke(p, cowdGd(4), u32le(cowd.at.tables[1]! / 512));
    },
    want: [
      { kind: 'warning', struct: 'CowdHeader', field: 'numGDEntries', message: /numGDEntries is 5, the capacity needs 3/ },
      { kind: 'warning', struct: 'grain directory', field: 'GDE[4]', message: /beyond the capacity/ },
    ],
    only: true,
  },
  {
    name: 'COWD a grain table entry beyond the capacity',
    kind: 'c',
    damage: (p) => poke(p, cowd.at.tables[2]! + 3000 * 4, u32le(cowd.fileLength / 512 - 1)),
    want: [{ kind: 'warning', struct: 'grain table', field: `GTE[${2 * 4096 + 3000}]`, message: /beyond the capacity/ }],
    only: true,
  },
  {
    name: 'COWD uncleanShutdown set',
    kind: 'c',
    damage: (p) => poke(p, COWD.uncleanShutdown, u32le(1)),
    want: [{ kind: 'warning', struct: 'CowdHeader', field: 'uncleanShutdown', message: /not closed cleanly/ }],
    only: true,
  },
  // ---- SESparse
  {
    name: 'SESparse unallocated entry with bits set',
    kind: 's',
    damage: (p) => poke(p, entryAt(ses, dataGrainIn(ses, 1)), u64le(5n)),
    want: [{ kind: 'corruption', struct: 'grain table', field: 'GTE[', message: /unallocated grain table entry \d+ has bits set/ }],
  },
  {
    name: 'SESparse entry of unknown type',
    kind: 's',
    damage: (p) => poke(p, entryAt(ses, dataGrainIn(ses, 0)), u64le(0x7000000000000000n)),
    want: [{ kind: 'corruption', struct: 'grain table', field: 'GTE[', message: /unknown type/ }],
  },
  {
    name: 'SESparse grain index outside the grain area',
    kind: 's',
    damage: (p) => poke(p, entryAt(ses, dataGrainIn(ses, 0)), sesEntry(sesHeader('grainsSize') / 8 + 3)),
    want: [{ kind: 'corruption', struct: 'grain table', field: 'GTE[', message: /outside the grain area/ }],
  },
  {
    name: 'SESparse two entries naming one grain',
    kind: 's',
    damage: async (p) => {
      const a = dataGrainIn(ses, 0);
      const slot = (ses.at.grains.get(a)! / 512 - sesGrainsSector()) / 8;
      await poke(p, entryAt(ses, dataGrainIn(ses, 1)), sesEntry(slot));
    },
    want: [{ kind: 'corruption', struct: 'grain table', field: 'GTE[', message: /^grains \d+ and \d+ share grain index \d+$/ }],
    only: true,
  },
  {
    name: 'SESparse journal running into the grain directory',
    kind: 's',
    damage: (p) => poke(p, SES.journalSize, u64le(100n)),
    want: [{ kind: 'corruption', struct: 'SeSparseConstHeader', field: 'journalSize', message: /the journal \(sectors 4\+100\) overlaps the grain directory/ }],
  },
  {
    name: 'SESparse volatile header size 0',
    kind: 's',
    damage: (p) => poke(p, SES.volatileHeaderSize, u64le(0n)),
    want: [{ kind: 'corruption', struct: 'SeSparseConstHeader', field: 'volatileHeaderSize', message: /volatile header size is 0/ }],
    only: true,
  },
  {
    name: 'SESparse back map past the end of the file',
    kind: 's',
    damage: (p) => poke(p, SES.backmapOffset, u64le(2n ** 40n)),
    want: [{ kind: 'corruption', struct: 'SeSparseConstHeader', field: 'backmapOffset', message: /the back map .* runs past the end of the file/ }],
    only: true,
  },
  {
    name: 'SESparse grain area declared past the end of the file',
    kind: 's',
    damage: (p) => poke(p, SES.grainsSize, u64le(BigInt(sesHeader('grainsSize') + 800))),
    want: [{ kind: 'warning', struct: 'SeSparseConstHeader', field: 'grainsSize', message: /the grain area .* runs past the end/ }],
    only: true,
  },
  {
    name: 'SESparse grain-table area not whole tables',
    kind: 's',
    // one sector more: no more whole tables, and the area now runs into the free bitmap
    damage: (p) => poke(p, SES.grainTablesSize, u64le(BigInt(sesHeader('grainTablesSize') + 1))),
    want: [
      { kind: 'warning', struct: 'SeSparseConstHeader', field: 'grainTablesSize', message: /not a whole number/ },
      { kind: 'corruption', struct: 'SeSparseConstHeader', field: 'grainTablesSize', message: /the grain-table area .* overlaps the free bitmap/ },
    ],
    only: true,
  },
  {
    name: 'SESparse freeGtNumber beyond the grain-table area',
    kind: 's',
    damage: (p) => poke(p, SES_VOL() + SES_VOLATILE.freeGtNumber, u64le(1000n)),
    want: [{ kind: 'corruption', struct: 'SeSparseVolatileHeader', field: 'freeGtNumber', message: /beyond the \d+ grain tables/ }],
    only: true,
  },
  {
    name: 'SESparse freeGtNumber below the tables in use',
    kind: 's',
    damage: (p) => poke(p, SES_VOL() + SES_VOLATILE.freeGtNumber, u64le(0n)),
    want: [{ kind: 'warning', struct: 'SeSparseVolatileHeader', field: 'freeGtNumber', message: /2 grain tables are in use but freeGtNumber is 0/ }],
    only: true,
  },
  {
    name: 'SESparse directory entry beyond the capacity not empty',
    kind: 's',
    damage: (p) => poke(p, sesGd(2), u64le(0x1000000000000004n)),
    want: [{ kind: 'corruption', struct: 'grain directory', field: 'GDE[2]', message: /beyond the capacity but is not empty/ }],
    only: true,
  },
  {
    name: 'SESparse a grain table entry beyond the capacity',
    kind: 's',
    damage: (p) => poke(p, ses.at.tables[1]! + 2000 * 8, u64le(0x2000000000000000n)),
    want: [{ kind: 'warning', struct: 'grain table', field: `GTE[${4096 + 2000}]`, message: /beyond the capacity/ }],
    only: true,
  },
];

for (const c of CHECK_CASES) {
  test(`check finds: ${c.name}; dry run and repair report it as not repairable and change no byte`, async () => {
    const { desc, extent } = await copy(c.kind);
    await c.damage(extent);
    const findings = await checkAll(desc, extent);
    for (const w of c.want) {
      const hit = findings.find((f) => f.kind === w.kind && (f.struct ?? '') === w.struct && (typeof w.field === 'string' ? (f.field ?? '').startsWith(w.field) : w.field.test(f.field ?? '')) && w.message.test(f.message));
      assert.ok(hit, `a ${w.kind} ${w.struct}.${String(w.field)} ${w.message}; found ${JSON.stringify(findings, null, 1)}`);
    }
    if (c.only) assert.equal(findings.length, c.want.length, `only the expected findings: ${JSON.stringify(findings, null, 1)}`);
    if (c.leaked !== undefined) assert.equal((await checkDisk(desc, { repair: false })).leakedBytes, c.leaked);
  });
}

test('vdkit check --repair on a damaged COWD link: exit 2, the finding printed as not repairable, no byte changed', async () => {
  const { desc, extent } = await copy('c');
  await poke(extent, COWD.freeSector, u32le(cowd.fileLength / 512 - 3));
  const before = [sha(extent), sha(desc)];
  const vdkit = (args: string[]) => run(process.execPath, [join(repoRoot(), 'bin', 'vdkit.js'), ...args]);
  const r = await vdkit(['check', '--repair', desc]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(r.stdout, /^ERROR: freeSector \d+ lies before .* \(not repairable by vdkit: ESXi COWD files are repaired on ESXi, vmkfstools -x repair\) \(CowdHeader\.freeSector\)$/m);
  assert.deepEqual([sha(extent), sha(desc)], before);
  const json = JSON.parse((await vdkit(['check', '--json', desc])).stdout) as { findings: CheckFinding[] };
  assert.deepEqual(json.findings.map((f) => [f.kind, f.struct, f.field]), [['corruption', 'CowdHeader', 'freeSector']]);
});

test('check: a grain table of garbage gives at most 1000 findings and one summary (memory bounded whatever the file holds)', async () => {
  const { desc, extent } = await copy('c');
  // every entry of grain table 1 points past the end of the file
  const table = Buffer.alloc(4096 * 4);
  for (let i = 0; i < 4096; i++) table.writeUInt32LE(0x00ffffff, i * 4);
  await poke(extent, cowd.at.tables[1]!, table);
  const report = await checkDisk(desc, { repair: false });
  assert.equal(report.findings.length, 1001, 'the first 1000 findings and a summary');
  const last = report.findings[1000]!;
  assert.equal(last.kind, 'corruption');
  assert.match(last.message, /^\d+ more findings left out/);
  const dropped = Number(/^(\d+)/.exec(last.message)![1]);
  assert.ok(dropped > 0);
  assert.equal(openFindings(report).corruptions > 0, true);
});
