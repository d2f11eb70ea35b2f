/**
 * ESXi delta links (vmfsSparse = COWD extents, seSparse = SESparse extents), which qemu-img can
 * read but not create: the files are hand-built from a seeded PRNG (test/helpers/esx-sparse-
 * builder.ts) and wrapped in descriptors as ESXi writes them. qemu-img is the oracle: every byte
 * vdkit reads must equal `qemu-img convert -O raw` of the same descriptor, vdkit's block status
 * must equal `qemu-img map`, and a chain vmfs base <- vmfsSparse <- seSparse flattened by vdkit's
 * convert must compare equal (`qemu-img compare`) to qemu's own flattening. The builder's model
 * is checked against qemu too, so a builder mistake cannot make both sides agree on nonsense.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Disk, DiskError } from '../../src/index.js';
import { convert } from '../../src/ops/convert.js';
import { firstDifference } from '../helpers/model.js';
import { BuildRng, DATA, ZERO, buildCowd, buildSeSparse, esxDescriptor, statesToRanges, writeExtent, type BuiltExtent } from '../helpers/esx-sparse-builder.js';
import { repoRoot, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, assertWholeDiskEqual, cidOf, descriptorText, mapToStatus, mergeStatus, qemuMap, runOk, seedOf, type Status } from './support.js';

interface Case {
  name: string;
  build: (rng: BuildRng) => BuiltExtent;
  type: 'VMFSSPARSE' | 'SESPARSE';
}

const CASES: Case[] = [
  // 512-byte grains (ESXi's default for COWD): 4 grain tables of 2 MiB, the third missing, a tail of 5 sectors
  { name: 'COWD, grainSize 1, 4 GTs (one absent)', type: 'VMFSSPARSE', build: (r) => buildCowd(r, { capacitySectors: 7 * 2048 + 5, grainSectors: 1, fill: 0.3, missingTables: [2] }) },
  // a grain size that is not a power of two (QEMU accepts any): 3 tables of 6 MiB, the last grain cut by the capacity
  { name: 'COWD, grainSize 3, 3 GTs', type: 'VMFSSPARSE', build: (r) => buildCowd(r, { capacitySectors: 13 * 2048 + 1, grainSectors: 3, fill: 0.25 }) },
  // 8 KiB grains: 2 tables of 32 MiB
  { name: 'COWD, grainSize 16, 2 GTs', type: 'VMFSSPARSE', build: (r) => buildCowd(r, { capacitySectors: 40 * 2048, grainSectors: 16, fill: 0.08 }) },
  // SESparse: 3 tables of 16 MiB (the second absent), data, zero and unmapped grains
  { name: 'SESparse, 3 GTs (one absent), zero and unmapped grains', type: 'SESPARSE', build: (r) => buildSeSparse(r, { capacitySectors: 40 * 2048 + 9, data: 0.25, zero: 0.1, unmapped: 0.1, missingTables: [1] }) },
];

/** ranges of `list` clipped to [offset, offset+length) */
function clip(list: readonly { offset: number; length: number; state: Status }[], offset: number, length: number) {
  const out: { offset: number; length: number; state: Status }[] = [];
  for (const r of list) {
    const a = Math.max(r.offset, offset);
    const b = Math.min(r.offset + r.length, offset + length);
    if (a < b) out.push({ offset: a, length: b - a, state: r.state });
  }
  return mergeStatus(out);
}

function plain(list: readonly { offset: number; length: number; state: Status; depth?: number }[]) {
  return list.map((r) => ({ offset: r.offset, length: r.length, state: r.state, ...(r.depth !== undefined ? { depth: r.depth } : {}) }));
}

async function writeLink(dir: string, stem: string, built: BuiltExtent, type: Case['type'], link: { cid: string; parentCid?: string; parentFileNameHint?: string }): Promise<string> {
  const file = `${stem}-${type === 'SESPARSE' ? 'sesparse' : 'delta'}.vmdk`;
  await writeExtent(join(dir, file), built);
  const desc = join(dir, `${stem}.vmdk`);
  writeFileSync(desc, esxDescriptor({ ...link, createType: type === 'SESPARSE' ? 'seSparse' : 'vmfsSparse', extents: [{ sectors: built.capacitySectors, type, file }] }));
  return desc;
}

for (const c of CASES) {
  test(`${c.name}: vdkit reads every byte and block as qemu-img does`, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    const dir = (await tmpDir(t)).path;
    const rng = new BuildRng(seedOf(t.name));
    const built = c.build(rng);
    const desc = await writeLink(dir, 'disk-000001', built, c.type, { cid: '5eed0001' });
    const capacity = built.capacitySectors * 512;

    const raw = join(dir, 'qemu.raw');
    await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', desc, raw], 'qemu-img convert');
    const qemuBytes = readFileSync(raw);
    const diff = firstDifference(qemuBytes, built.content);
    assert.equal(diff, -1, `qemu-img reads the hand-built file as the builder meant (first difference at byte ${diff})`);

    const d = await Disk.open(desc, { readOnly: true });
    try {
      assert.equal(d.capacity, capacity);
      assert.equal(d.type, c.type === 'SESPARSE' ? 'seSparse' : 'vmfsSparse');
      assert.equal((await d.info()).extents[0]!.type, c.type);
      await assertWholeDiskEqual(d, raw, c.name);
      // unaligned reads across grain and table boundaries (runs of grains coalesced, or not)
      const prng = new BuildRng(seedOf(`${t.name}/reads`));
      const gtBytes = 4096 * built.grainBytes;
      const spots = [0, built.grainBytes - 1, gtBytes - 700, 2 * gtBytes - 3, capacity - 1000];
      for (let i = 0; i < 40; i++) spots.push(prng.int(0, capacity - 1));
      for (const at of spots.filter((x) => x >= 0 && x < capacity)) {
        const len = Math.min(prng.int(1, 3 * built.grainBytes + 5000), capacity - at);
        const got = await d.read(at, len);
        const i = firstDifference(got, qemuBytes.subarray(at, at + len));
        assert.equal(i, -1, `read ${at}+${len} differs at byte ${at + i}`);
      }

      // block status: equal to the builder's grain states and to qemu-img map, whole and in pieces
      const status = plain(await d.blockStatus(0, capacity));
      const model = statesToRanges(built.states, built.grainBytes, capacity);
      assert.deepEqual(status, model, 'vdkit block status vs the grains the builder allocated');
      const qemu = mapToStatus(await qemuMap(desc));
      assert.deepEqual(status, qemu, 'vdkit block status vs qemu-img map');
      for (const [at, len] of [[built.grainBytes * 5 + 100, 10_000], [gtBytes - 4096, 3 * 4096 + 1], [capacity - 777, 777]] as const) {
        if (at + len > capacity) continue;
        assert.deepEqual(plain(await d.blockStatus(at, len)), clip(model, at, len), `block status of ${at}+${len}`);
      }
      // honest: zero and unallocated ranges read as zeros; SESparse zero/unmapped grains are "zero"
      for (const r of status) if (r.state !== 'data') assert.ok(qemuBytes.subarray(r.offset, r.offset + r.length).every((b) => b === 0), `${r.state} range ${r.offset}+${r.length} reads zeros`);
      if (c.type === 'SESPARSE') assert.ok(status.some((r) => r.state === 'zero'), 'the SESparse case has zero grains');
      else assert.ok(!status.some((r) => r.state === 'zero'), 'COWD has no zero grains');
      // check walks every table of a file as ESXi lays it out and finds nothing
      const report = await d.image.maintenance().check!({ repair: false });
      assert.deepEqual(report.findings, []);
      assert.equal(report.leakedBytes, 0);
      assert.equal(d.image.capabilities.check, 'detect', 'ESXi deltas are checked, not repaired');
    } finally {
      await d.close();
    }

    // vdkit check --repair: clean, and no byte of either file changes
    const extentFile = join(dir, `disk-000001-${c.type === 'SESPARSE' ? 'sesparse' : 'delta'}.vmdk`);
    const hashes = () => [desc, extentFile].map((p) => createHash('sha256').update(readFileSync(p)).digest('hex'));
    const hashed = hashes();
    const cli = await run(process.execPath, [join(repoRoot(), 'bin', 'vdkit.js'), 'check', '--repair', desc]);
    assert.equal(cli.code, 0, cli.stdout + cli.stderr);
    assert.match(cli.stdout, /No errors were found on the image/);
    assert.deepEqual(hashes(), hashed, 'check --repair of a clean ESXi delta writes nothing');

    // SESparse: read-write is refused before anything is written, naming the extent file (COWD
    // is written: vmdk-cowd-write.test.ts)
    if (c.type !== 'SESPARSE') return;
    const before = readFileSync(desc);
    for (const path of [desc, join(dir, `disk-000001-sesparse.vmdk`)]) {
      const err = await Disk.open(path).then(
        async (x) => {
          await x.close();
          return undefined;
        },
        (e: unknown) => e,
      );
      assert.ok(err instanceof DiskError, `read-write open of ${path} fails with a DiskError`);
      assert.equal(err.code, 'NOTSUPPORTED', err.message);
      assert.match(err.message, /-(delta|sesparse)\.vmdk/);
      assert.equal(err.details.field, 'extent type');
    }
    assert.ok(readFileSync(desc).equals(before), 'the refused open left the descriptor alone');
  });
}

test('ESXi chain vmfs <- vmfsSparse <- seSparse: vdkit flattens it to the bytes qemu-img does', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const rng = new BuildRng(seedOf(t.name));
  const sectors = 17 * 2048 + 3; // 9 tables of the COWD link (2 MiB each), 2 SESparse tables (16 MiB)
  const capacity = sectors * 512;

  // base: an ESXi thick disk (createType vmfs, one VMFS extent), partly written
  const basePath = join(dir, 'vm.vmdk');
  const base = await Disk.create(basePath, { type: 'vmfs', capacity });
  const expected = Buffer.alloc(capacity);
  for (let i = 0; i < 12; i++) {
    const at = rng.int(0, capacity - 1);
    const data = rng.bytes(Math.min(rng.int(1, 2 * MiB), capacity - at));
    await base.write(at, data);
    data.copy(expected, at);
  }
  await base.close();
  const baseCid = cidOf(await descriptorText(basePath));

  const mid = buildCowd(rng, { capacitySectors: sectors, grainSectors: 1, fill: 0.1, missingTables: [1], parentFileName: 'vm.vmdk' });
  const midPath = await writeLink(dir, 'vm-000001', mid, 'VMFSSPARSE', { cid: '0000c0d1', parentCid: baseCid, parentFileNameHint: 'vm.vmdk' });
  const top = buildSeSparse(rng, { capacitySectors: sectors, data: 0.2, zero: 0.05, unmapped: 0.05 });
  const topPath = await writeLink(dir, 'vm-000002', top, 'SESPARSE', { cid: '0000fe5e', parentCid: '0000c0d1', parentFileNameHint: 'vm-000001.vmdk' });

  // what the chain must read as, and which link answers for each sector (depth 0 = top)
  const owner: { state: Status; depth: number }[] = [];
  for (let s = 0; s < sectors; s++) {
    const ts = top.states[Math.floor((s * 512) / top.grainBytes)]!;
    const ms = mid.states[s]!;
    const span = [s * 512, s * 512 + 512] as const;
    if (ts !== 0) {
      owner.push({ state: ts === ZERO ? 'zero' : 'data', depth: 0 });
      if (ts === DATA) top.content.copy(expected, span[0], span[0], span[1]);
      else expected.fill(0, span[0], span[1]);
    } else if (ms === DATA) {
      owner.push({ state: 'data', depth: 1 });
      mid.content.copy(expected, span[0], span[0], span[1]);
    } else owner.push({ state: 'data', depth: 2 });
  }
  const expectedStatus: { offset: number; length: number; state: Status; depth: number }[] = [];
  owner.forEach((o, s) => {
    const last = expectedStatus[expectedStatus.length - 1];
    if (last && last.state === o.state && last.depth === o.depth) last.length += 512;
    else expectedStatus.push({ offset: s * 512, length: 512, ...o });
  });

  const qemuRaw = join(dir, 'qemu.raw');
  await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', topPath, qemuRaw], 'qemu-img convert of the chain');
  const qemuBytes = readFileSync(qemuRaw);
  assert.equal(firstDifference(qemuBytes, expected), -1, 'qemu-img flattens the chain as the model says');
  const info = JSON.parse((await runOk('qemu-img', ['info', '--backing-chain', '--output=json', topPath], 'qemu-img info')).stdout) as unknown[];
  assert.equal(info.length, 3, 'qemu-img sees three links');

  const d = await Disk.open(topPath, { readOnly: true });
  try {
    const i = await d.info();
    assert.equal(i.numLinks, 3);
    assert.deepEqual(i.chain, [topPath, midPath, basePath]);
    await assertWholeDiskEqual(d, qemuRaw, 'vdkit read of the ESXi chain');
    assert.deepEqual(plain(await d.blockStatus(0, capacity)), expectedStatus, 'chain block status names the link of every range');

    // flatten with vdkit: a standalone VMDK and a raw file
    const outVmdk = join(dir, 'flat.vmdk');
    const outRaw = join(dir, 'flat.raw');
    await convert(d, outVmdk, {});
    await convert(d, outRaw, { format: 'raw' });
    const flat = await Disk.open(outVmdk, { readOnly: true });
    assert.equal((await flat.info()).numLinks, 1, 'the flattened disk has no parent');
    await flat.close();
    for (const [out, fmt] of [[outVmdk, 'vmdk'], [outRaw, 'raw']] as const) {
      const cmp = await run('qemu-img', ['compare', '-f', fmt, '-F', 'raw', out, qemuRaw]);
      assert.equal(cmp.code, 0, `qemu-img compare ${out} with qemu's flattening: ${cmp.stdout}${cmp.stderr}`);
    }
    const chk = await run('qemu-img', ['check', '-f', 'vmdk', outVmdk]);
    assert.equal(chk.code, 0, chk.stdout + chk.stderr);
  } finally {
    await d.close();
  }

  // vdkit check walks the SESparse top and then its links (the COWD delta, the vmfs base): all clean
  const chk = await run(process.execPath, [join(repoRoot(), 'bin', 'vdkit.js'), 'check', '--json', topPath]);
  assert.equal(chk.code, 0, chk.stdout + chk.stderr);
  const report = JSON.parse(chk.stdout) as { findings: unknown[]; links?: { path: string; findings: unknown[] }[] };
  assert.deepEqual(report.findings, []);
  assert.deepEqual(report.links?.map((l) => [l.path, l.findings]), [[midPath, []], [basePath, []]]);

  // the command line does the same (`vdkit convert` opens its source read-only)
  const cliOut = join(dir, 'cli.qcow2');
  const cli = await run(process.execPath, [join(repoRoot(), 'bin', 'vdkit.js'), 'convert', '-O', 'qcow2', topPath, cliOut]);
  assert.equal(cli.code, 0, cli.stdout + cli.stderr);
  const cmp = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'vmdk', cliOut, topPath]);
  assert.equal(cmp.code, 0, `qemu-img compare of vdkit convert -O qcow2 with the chain: ${cmp.stdout}${cmp.stderr}`);

  // a read-write open of the chain is refused at the ESXi link, naming its file
  await assert.rejects(Disk.open(topPath), (e: unknown) => e instanceof DiskError && e.code === 'NOTSUPPORTED' && e.message.includes('vm-000002-sesparse.vmdk'));
});

test('ESXi delta links are checked like any VMDK link: parent CID, ESX/hosted style', async (t) => {
  const dir = (await tmpDir(t)).path;
  const rng = new BuildRng(seedOf(t.name));
  const sectors = 4 * 2048;
  const built = buildCowd(rng, { capacitySectors: sectors, grainSectors: 1, fill: 0.1 });

  const vmfs = join(dir, 'esx.vmdk');
  await (await Disk.create(vmfs, { type: 'vmfs', capacity: sectors * 512 })).close();
  const cid = cidOf(await descriptorText(vmfs));
  // a CID that is not the parent's: CID_MISMATCH, naming both
  const wrong = ((parseInt(cid, 16) ^ 1) >>> 0).toString(16).padStart(8, '0');
  const stale = await writeLink(dir, 'stale', built, 'VMFSSPARSE', { cid: '00000001', parentCid: wrong, parentFileNameHint: 'esx.vmdk' });
  await assert.rejects(Disk.open(stale, { readOnly: true }), (e: unknown) => e instanceof DiskError && e.code === 'CID_MISMATCH' && e.details.field === 'parentCID');
  // a hosted base under an ESX delta: INVALIDCHAIN (VixDiskLib's rule; QEMU does not check it)
  const hosted = join(dir, 'hosted.vmdk');
  await (await Disk.create(hosted, { type: 'monolithicSparse', capacity: sectors * 512 })).close();
  const mixed = await writeLink(dir, 'mixed', built, 'VMFSSPARSE', { cid: '00000002', parentCid: cidOf(await descriptorText(hosted)), parentFileNameHint: 'hosted.vmdk' });
  await assert.rejects(Disk.open(mixed, { readOnly: true }), (e: unknown) => e instanceof DiskError && e.code === 'INVALIDCHAIN' && e.details.field === 'createType');
  // the matching link opens, and reads the parent's zeros where the delta holds nothing
  const good = await writeLink(dir, 'good', built, 'VMFSSPARSE', { cid: '00000003', parentCid: cid, parentFileNameHint: 'esx.vmdk' });
  const d = await Disk.open(good, { readOnly: true });
  assert.equal((await d.info()).numLinks, 2);
  assert.ok((await d.read(0, sectors * 512)).equals(built.content));
  await d.close();
});
