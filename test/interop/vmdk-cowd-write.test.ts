/**
 * Writing COWD (vmfsSparse) extents (issue 15 item 5): grains not in the file are allocated at the
 * next free sector (their grain table first when the directory has none), freeSector moves past
 * them, and uncleanShutdown is 1 only while a session writes. The files are hand-built as ESXi
 * lays them out (test/helpers/esx-sparse-builder.ts); qemu-img, which reads COWD through its
 * descriptor, is the oracle: `qemu-img compare` against a raw model of every write, alone and
 * under a vmfs base (copy-on-write of partial grains from the parent).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Disk, checkDisk } from '../../src/index.js';
import { BuildRng, COWD, buildCowd, esxDescriptor, writeExtent, type BuiltExtent } from '../helpers/esx-sparse-builder.js';
import { firstDifference } from '../helpers/model.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, cidOf, descriptorText, seedOf } from './support.js';

async function writeCowdLink(dir: string, stem: string, built: BuiltExtent, link: { cid: string; parentCid?: string; parentFileNameHint?: string }): Promise<{ desc: string; extent: string }> {
  const file = `${stem}-delta.vmdk`;
  await writeExtent(join(dir, file), built);
  const desc = join(dir, `${stem}.vmdk`);
  writeFileSync(desc, esxDescriptor({ ...link, createType: 'vmfsSparse', extents: [{ sectors: built.capacitySectors, type: 'VMFSSPARSE', file }] }));
  return { desc, extent: join(dir, file) };
}

/** random writes over the disk: into grains held, grains not held, tables not there, partial grains */
function plan(rng: BuildRng, capacity: number, grainBytes: number, count: number): { at: number; data: Buffer }[] {
  const out: { at: number; data: Buffer }[] = [];
  for (let i = 0; i < count; i++) {
    const at = rng.int(0, capacity - 1);
    const len = Math.min(capacity - at, rng.pick([1, 512, grainBytes, 3 * grainBytes + 100, rng.int(1, 300 * 1024)]));
    out.push({ at, data: rng.bytes(len) });
  }
  // the first and last bytes of the disk, a whole grain table span
  out.push({ at: 0, data: rng.bytes(700) }, { at: capacity - 513, data: rng.bytes(513) });
  return out;
}

function header(extent: string): { freeSector: number; uncleanShutdown: number; fileSectors: number } {
  const b = readFileSync(extent);
  return { freeSector: b.readUInt32LE(COWD.freeSector), uncleanShutdown: b.readUInt32LE(COWD.uncleanShutdown), fileSectors: Math.ceil(b.length / 512) };
}

async function qemuCompare(image: string, raw: string, label: string): Promise<void> {
  const args = ['compare', '-f', 'vmdk', '-F', 'raw', image, raw];
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, `${label}: ${describeRun('qemu-img', args, r)}`);
}

for (const spec of [
  { name: 'grainSize 1 (ESXi\'s default), one table absent', grainSectors: 1, sectors: 5 * 2048 + 5, fill: 0.2, missingTables: [1, 3] },
  { name: 'grainSize 16, empty (every table allocated by vdkit)', grainSectors: 16, sectors: 40 * 2048, fill: 0, missingTables: [0, 1] },
  { name: 'grainSize 3 (not a power of two), partly filled', grainSectors: 3, sectors: 13 * 2048 + 1, fill: 0.25, missingTables: [2] },
]) {
  test(`COWD write, ${spec.name}: reads back after reopen, qemu-img compare equals the model, check clean`, async (t) => {
    const dir = (await tmpDir(t, 'vdkit-cowd-')).path;
    const rng = new BuildRng(seedOf(t.name));
    const built = buildCowd(rng, { capacitySectors: spec.sectors, grainSectors: spec.grainSectors, fill: spec.fill, missingTables: spec.missingTables });
    const { desc, extent } = await writeCowdLink(dir, 'disk-000001', built, { cid: '5eed0001' });
    const capacity = spec.sectors * 512;
    const model = Buffer.from(built.content);
    const before = header(extent);

    const d = await Disk.open(desc);
    assert.equal(d.image.clusterSize, Math.max(512, built.grainBytes));
    for (const w of plan(rng, capacity, built.grainBytes, 30)) {
      await d.write(w.at, w.data);
      w.data.copy(model, w.at);
    }
    assert.equal(header(extent).uncleanShutdown, 1, 'uncleanShutdown is set while the session writes');
    assert.equal(firstDifference(await d.read(0, capacity), model), -1, 'the open handle reads its writes');
    await d.close();

    const after = header(extent);
    assert.equal(after.uncleanShutdown, 0, 'a clean close clears uncleanShutdown');
    assert.ok(after.freeSector > before.freeSector, 'freeSector moved past the new grains');
    assert.equal(after.freeSector, after.fileSectors, 'the file ends at freeSector (no gap, nothing past it)');
    assert.notEqual(cidOf(await descriptorText(desc)), '5eed0001', 'the first write renewed the CID');

    const r = await Disk.open(desc, { readOnly: true });
    try {
      assert.equal(firstDifference(await r.read(0, capacity), model), -1, 'a reopened disk reads every write');
    } finally {
      await r.close();
    }
    const chk = await checkDisk(desc, { repair: false });
    assert.deepEqual(chk.findings, [], JSON.stringify(chk.findings));

    if (!skipUnless(t, 'qemu-img')) return;
    const raw = join(dir, 'model.raw');
    writeFileSync(raw, model);
    await qemuCompare(desc, raw, 'qemu reads what vdkit wrote');
  });
}

test('COWD write under a vmfs base: partial grains are copied up from the parent; qemu-img compare of the chain', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-cowd-')).path;
  const rng = new BuildRng(seedOf(t.name));
  const sectors = 3 * 4096 * 16; // 3 tables of 16-sector grains (32 MiB each), 96 MiB written sparse
  const capacity = sectors * 512;
  const basePath = join(dir, 'vm.vmdk');
  const base = await Disk.create(basePath, { type: 'vmfs', capacity });
  const expected = Buffer.alloc(capacity);
  for (let i = 0; i < 10; i++) {
    const at = rng.int(0, capacity - 1);
    const data = rng.bytes(Math.min(rng.int(1, MiB), capacity - at));
    await base.write(at, data);
    data.copy(expected, at);
  }
  await base.close();
  const baseCid = cidOf(await descriptorText(basePath));
  const child = buildCowd(rng, { capacitySectors: sectors, grainSectors: 16, fill: 0.02, missingTables: [1], parentFileName: 'vm.vmdk' });
  const { desc, extent } = await writeCowdLink(dir, 'vm-000001', child, { cid: '0000c0d1', parentCid: baseCid, parentFileNameHint: 'vm.vmdk' });
  // what the chain reads before the writes: the child's grains over the base
  for (let gi = 0; gi < child.states.length; gi++) {
    if (child.states[gi]) child.content.copy(expected, gi * child.grainBytes, gi * child.grainBytes, (gi + 1) * child.grainBytes);
  }
  const baseBytes = readFileSync(join(dir, 'vm-flat.vmdk'));

  const d = await Disk.open(desc);
  assert.equal((await d.info()).numLinks, 2);
  for (const w of plan(rng, capacity, child.grainBytes, 25)) {
    await d.write(w.at, w.data);
    w.data.copy(expected, w.at);
  }
  await d.close();
  assert.ok(readFileSync(join(dir, 'vm-flat.vmdk')).equals(baseBytes), 'the base was not written');
  assert.equal(header(extent).uncleanShutdown, 0);

  const r = await Disk.open(desc, { readOnly: true });
  try {
    assert.equal(firstDifference(await r.read(0, capacity), expected), -1, 'the chain reads the writes over the base');
  } finally {
    await r.close();
  }
  if (!skipUnless(t, 'qemu-img')) return;
  const raw = join(dir, 'expected.raw');
  writeFileSync(raw, expected);
  await qemuCompare(desc, raw, 'qemu reads the chain as the model');
});

test('a bare COWD file opened read-write takes writes too; SESparse stays read-only', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-cowd-')).path;
  const rng = new BuildRng(seedOf(t.name));
  const built = buildCowd(rng, { capacitySectors: 4 * 2048, grainSectors: 8, fill: 0.1 });
  const p = join(dir, 'bare-delta.vmdk');
  await writeExtent(p, built);
  const d = await Disk.open(p);
  const data = rng.bytes(10000);
  await d.write(12345, data);
  await d.close();
  const r = await Disk.open(p, { readOnly: true });
  try {
    assert.ok((await r.read(12345, data.length)).equals(data));
    assert.ok((await r.read(0, 4096)).equals(built.content.subarray(0, 4096)));
  } finally {
    await r.close();
  }
});

test('a COWD whose grains overlap (each other or a grain table) opens read-only only: read-write is NEEDSREPAIR', async (t) => {
  const { expectFailure } = await import('../corpus/support.js');
  const dir = (await tmpDir(t, 'vdkit-cowd-')).path;
  const rng = new BuildRng(seedOf(t.name));
  // grainSize 1 -> 5: every grain now runs over the next one (found by the fuzzer as a lost write)
  const built = buildCowd(rng, { capacitySectors: 5 * 2048, grainSectors: 1, fill: 0.3 });
  const wide = await writeCowdLink(dir, 'wide', built, { cid: '5eed0002' });
  const fh = (await import('node:fs')).openSync(wide.extent, 'r+');
  const five = Buffer.alloc(4);
  five.writeUInt32LE(5);
  (await import('node:fs')).writeSync(fh, five, 0, 4, COWD.grainSize);
  (await import('node:fs')).closeSync(fh);
  const before = readFileSync(wide.extent);
  await expectFailure(() => Disk.open(wide.desc), { code: 'NEEDSREPAIR', path: wide.extent, message: /share sectors/ });
  await (await Disk.open(wide.desc, { readOnly: true })).close();
  assert.ok(readFileSync(wide.extent).equals(before), 'the refused open wrote nothing');

  // a grain entry naming sectors of a grain table
  const b2 = buildCowd(rng, { capacitySectors: 5 * 2048, grainSectors: 1, fill: 0.3 });
  const over = await writeCowdLink(dir, 'over', b2, { cid: '5eed0003' });
  const bytes = readFileSync(over.extent);
  const table0 = b2.at.tables[0]! / 512;
  const firstUsed = [...b2.at.grains.keys()].filter((gi) => gi < 4096).sort((a, b) => a - b)[0]!;
  bytes.writeUInt32LE(table0 + 3, b2.at.tables[0]! + firstUsed * 4);
  writeFileSync(over.extent, bytes);
  await expectFailure(() => Disk.open(over.desc), { code: 'NEEDSREPAIR', path: over.extent, message: /share sectors/ });
});
