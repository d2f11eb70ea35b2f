/**
 * check / repair / dry run for VDI and VHD (damaged copies of good images, each damage placed
 * at a known byte), the dry run of every repairing format, and broken chains.
 *
 * Each damaged image: the findings (kind, field), `vdkit check`'s exit code, that a dry run
 * changes no byte and no mtime, that a repair fixes it (a second check is clean, qemu-img check
 * where qemu checks the format, qemu-img opens and compares it) and the content reads as
 * expected (blocks whose entries a repair drops read as zeros).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, rm, stat, open, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, checkDisk, createChild, openFindings } from '../../src/index.js';
import type { CheckReport } from '../../src/formats/types.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;
const VDKIT = new URL('../../../bin/vdkit.js', import.meta.url).pathname;
const vdkit = (args: string[]) => run(process.execPath, [VDKIT, ...args]);

async function poke(p: string, at: number, data: Buffer): Promise<void> {
  const fh = await open(p, 'r+');
  await fh.write(data, 0, data.length, at);
  await fh.close();
}
async function readAt(p: string, at: number, n: number): Promise<Buffer> {
  const fh = await open(p, 'r');
  const b = Buffer.alloc(n);
  await fh.read(b, 0, n, at);
  await fh.close();
  return b;
}
const u32le = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
};
const u32be = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
};
async function fingerprint(p: string): Promise<string> {
  const s = await stat(p);
  return `${createHash('sha256').update(await readFile(p)).digest('hex')} ${s.size} ${s.mtimeMs}`;
}
async function content(p: string, length: number): Promise<Buffer> {
  const d = await Disk.open(p, { readOnly: true });
  try {
    return await d.read(0, length);
  } finally {
    await d.close();
  }
}
const fields = (r: CheckReport, kind: string) => r.findings.filter((f) => f.kind === kind).map((f) => f.field).sort();
const pattern = (n: number, len: number) => Buffer.alloc(len, (n * 37 + 11) & 0xff);

/** Dry run first (nothing changes), then the repair, then a clean second check. */
async function dryRunThenRepair(p: string, exitBefore: number): Promise<CheckReport> {
  const before = await fingerprint(p);
  const dry = await checkDisk(p, { repair: true, dryRun: true });
  assert.equal(dry.dryRun, true);
  assert.ok(dry.findings.some((f) => f.wouldRepair), 'the dry run says what it would repair');
  assert.ok(!dry.findings.some((f) => f.repaired), 'a dry run repairs nothing');
  const cli = await vdkit(['check', '--repair', '--dry-run', p]);
  assert.equal(cli.code, exitBefore, cli.stdout + cli.stderr);
  assert.match(cli.stdout, /Would repair:/);
  assert.equal(await fingerprint(p), before, 'a dry run changes no byte and no mtime');
  const report = await checkDisk(p, { repair: true });
  assert.deepEqual(openFindings(report), { corruptions: 0, leaks: 0 }, 'the repair fixed everything');
  const again = await checkDisk(p, { repair: false });
  assert.deepEqual(again.findings.filter((f) => f.kind !== 'warning'), [], 'a second check is clean');
  return report;
}

// ------------------------------------------------------------------ VDI

const VDI_BLOCKS = 16;

/** A qemu-made dynamic VDI (1 MiB blocks, 16 MiB) with blocks 0..5 and 9 written, and its map. */
async function vdiImage(dir: string): Promise<{ p: string; offBlocks: number; offData: number; map: number[]; expected: Buffer }> {
  const p = join(dir, 'a.vdi');
  await run('qemu-img', ['create', '-q', '-f', 'vdi', p, `${VDI_BLOCKS}M`]);
  const expected = Buffer.alloc(VDI_BLOCKS * MiB);
  const d = await Disk.open(p);
  for (const b of [0, 1, 2, 3, 4, 5, 9]) {
    const data = pattern(b, MiB);
    await d.write(b * MiB, data);
    data.copy(expected, b * MiB);
  }
  await d.close();
  const h = await readAt(p, 0, 0x200);
  const offBlocks = h.readUInt32LE(0x154);
  const offData = h.readUInt32LE(0x158);
  const m = await readAt(p, offBlocks, 4 * VDI_BLOCKS);
  return { p, offBlocks, offData, map: [...Array(VDI_BLOCKS).keys()].map((i) => m.readUInt32LE(4 * i)), expected };
}

test('vdi check: a clean image has no findings, and qemu-img check agrees', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const { p } = await vdiImage((await tmpDir(t)).path);
  const r = await checkDisk(p, { repair: false });
  assert.deepEqual(r.findings, []);
  assert.equal((await vdkit(['check', p])).code, 0);
  assert.equal((await run('qemu-img', ['check', '-f', 'vdi', p])).code, 0);
});

test('vdi check: shared, out-of-range and past-the-end entries and a wrong count are corruptions; repair frees them and qemu-img check agrees', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const { p, offBlocks, map, expected } = await vdiImage((await tmpDir(t)).path);
  await poke(p, offBlocks + 4 * 7, u32le(map[2]!)); // virtual 7 -> block of virtual 2 (7 comes later: it loses)
  await poke(p, offBlocks + 4 * 8, u32le(5000)); // past the data area
  await poke(p, offBlocks + 4 * 10, u32le(VDI_BLOCKS - 1)); // inside cBlocks, past the end of the file
  await poke(p, 0x184, u32le(3)); // cBlocksAllocated (0x184) 7 -> 3
  const r = await checkDisk(p, { repair: false });
  assert.deepEqual(fields(r, 'corruption'), ['blockMap[10]', 'blockMap[7]', 'blockMap[8]', 'cBlocksAllocated'].sort());
  assert.equal((await vdkit(['check', p])).code, 2);
  const q = await run('qemu-img', ['check', '-f', 'vdi', p]);
  assert.equal(q.code, 2, 'qemu-img check finds corruption too');
  await assert.rejects(Disk.open(p, { readOnly: true }), (e: { code?: string }) => e.code === 'CORRUPT');
  const report = await dryRunThenRepair(p, 2);
  assert.ok(report.findings.filter((f) => f.kind === 'corruption').every((f) => f.repaired));
  const q2 = await run('qemu-img', ['check', '-f', 'vdi', p]);
  assert.equal(q2.code, 0, q2.stdout + q2.stderr);
  // the dropped entries read as zeros; every other block as written
  assert.ok((await content(p, VDI_BLOCKS * MiB)).equals(expected));
  const raw = p + '.raw';
  await writeFile(raw, expected);
  assert.equal((await run('qemu-img', ['compare', '-f', 'vdi', '-F', 'raw', p, raw])).code, 0);
});

test('vdi check: holes in the data area and bytes after the last block are leaks (exit 3); repair moves blocks down and cuts the file', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const { p, offBlocks, offData, map, expected } = await vdiImage((await tmpDir(t)).path);
  // virtual 1 and 3 forgotten (their blocks become holes), the count follows the map; plus a tail
  await poke(p, offBlocks + 4 * 1, u32le(0xffffffff));
  await poke(p, offBlocks + 4 * 3, u32le(0xffffffff));
  await poke(p, 0x184, u32le(5));
  const size = (await stat(p)).size;
  await truncate(p, size + MiB + 1000);
  expected.fill(0, 1 * MiB, 2 * MiB);
  expected.fill(0, 3 * MiB, 4 * MiB);
  const r = await checkDisk(p, { repair: false });
  assert.deepEqual(fields(r, 'corruption'), []);
  assert.deepEqual(fields(r, 'leak'), ['blockMap', 'fileSize']);
  assert.equal(r.leakedBytes, 2 * MiB + MiB + 1000);
  assert.equal((await vdkit(['check', p])).code, 3);
  // a read-write open refuses a data area with holes until it is repaired
  await assert.rejects(Disk.open(p), /NEEDSREPAIR|unused slots/);
  await dryRunThenRepair(p, 3);
  assert.equal((await stat(p)).size, offData + 5 * MiB, 'five blocks, dense');
  assert.ok((await content(p, VDI_BLOCKS * MiB)).equals(expected));
  assert.equal((await run('qemu-img', ['check', '-f', 'vdi', p])).code, 0);
  // writable again: a new block goes after the five
  const d = await Disk.open(p);
  await d.write(12 * MiB, pattern(12, MiB));
  await d.close();
  assert.equal((await checkDisk(p, { repair: false })).findings.length, 0);
  assert.ok(map.length === VDI_BLOCKS);
});

test('vdi check: a base carrying a parent UUID is a warning that repair clears', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const { p } = await vdiImage((await tmpDir(t)).path);
  await poke(p, 0x1a8, Buffer.alloc(16, 0x5a)); // uuidLinkage
  const r = await checkDisk(p, { repair: false });
  assert.deepEqual(fields(r, 'warning'), ['uuidLinkage']);
  assert.equal((await vdkit(['check', p])).code, 0, 'a warning alone is clean');
  const fixed = await checkDisk(p, { repair: true });
  assert.equal(fixed.findings[0]!.repaired, true);
  assert.ok((await readAt(p, 0x1a8, 16)).equals(Buffer.alloc(16)));
  assert.equal((await run('qemu-img', ['check', '-f', 'vdi', p])).code, 0);
});

// ------------------------------------------------------------------ VHD

const VHD_SIZE = 16 * MiB;

/** A vdkit-made dynamic VHD (2 MiB blocks) with blocks 0, 1, 3 and 5 written. */
async function vhdImage(dir: string): Promise<{ p: string; batAt: number; headerAt: number; expected: Buffer }> {
  const p = join(dir, 'a.vhd');
  const d = await Disk.create(p, { format: 'vhd', capacity: VHD_SIZE });
  const expected = Buffer.alloc(VHD_SIZE);
  for (const b of [0, 1, 3, 5]) {
    const data = pattern(b, 2 * MiB);
    await d.write(b * 2 * MiB, data);
    data.copy(expected, b * 2 * MiB);
  }
  await d.close();
  const footer = await readAt(p, 0, 512);
  const headerAt = Number(footer.readBigUInt64BE(16));
  const header = await readAt(p, headerAt, 1024);
  return { p, batAt: Number(header.readBigUInt64BE(16)), headerAt, expected };
}

async function qemuAgrees(t: TestContext, p: string, expected: Buffer): Promise<void> {
  if (!skipUnless(t, 'qemu-img')) return;
  const info = await run('qemu-img', ['info', '-f', 'vpc', p]);
  assert.equal(info.code, 0, info.stderr);
  const raw = p + '.raw';
  await writeFile(raw, expected);
  const c = await run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', p, raw]);
  assert.equal(c.code, 0, c.stdout + c.stderr);
}

test('vhd check: a clean image has no findings', async (t) => {
  const { p } = await vhdImage((await tmpDir(t)).path);
  assert.deepEqual((await checkDisk(p, { repair: false })).findings, []);
  assert.equal((await vdkit(['check', p])).code, 0);
});

test('vhd check: a bad end footer checksum is repaired from the copy at offset 0', async (t) => {
  const { p, expected } = await vhdImage((await tmpDir(t)).path);
  const size = (await stat(p)).size;
  // a byte of the unique id, flipped (a fixed value equals the random id's byte 1 time in 256)
  await poke(p, size - 512 + 70, Buffer.from([(await readAt(p, size - 512 + 70, 1))[0]! ^ 0xff]));
  const r = await checkDisk(p, { repair: false });
  assert.deepEqual(fields(r, 'corruption'), ['checksum']);
  assert.equal(r.findings[0]!.struct, 'footer');
  assert.equal((await vdkit(['check', p])).code, 2);
  await assert.rejects(Disk.open(p, { readOnly: true }), /checksum/);
  await dryRunThenRepair(p, 2);
  assert.ok((await readAt(p, size - 512, 512)).equals(await readAt(p, 0, 512)));
  assert.ok((await content(p, VHD_SIZE)).equals(expected));
  await qemuAgrees(t, p, expected);
});

test('vhd check: a damaged footer copy at offset 0 (what QEMU reads) is rewritten from the end footer', async (t) => {
  const { p, expected } = await vhdImage((await tmpDir(t)).path);
  await poke(p, 40, Buffer.from([0x01, 0x00])); // original size field changed: checksum no longer matches
  const r = await checkDisk(p, { repair: false });
  assert.deepEqual(fields(r, 'corruption'), ['checksum']);
  assert.equal(r.findings[0]!.struct, 'footer copy');
  await dryRunThenRepair(p, 2);
  await qemuAgrees(t, p, expected);
});

test('vhd check: no footer at the end (file cut short) is repaired by appending the copy', async (t) => {
  const { p, expected } = await vhdImage((await tmpDir(t)).path);
  const size = (await stat(p)).size;
  await truncate(p, size - 512);
  const r = await checkDisk(p, { repair: false });
  assert.deepEqual(fields(r, 'corruption'), ['cookie']);
  await dryRunThenRepair(p, 2);
  assert.equal((await stat(p)).size, size);
  assert.ok((await content(p, VHD_SIZE)).equals(expected));
  await qemuAgrees(t, p, expected);
});

test('vhd check: a bad dynamic header checksum and a stray next-structure offset are repaired', async (t) => {
  const { p, headerAt, expected } = await vhdImage((await tmpDir(t)).path);
  await poke(p, headerAt + 8, Buffer.alloc(8, 0)); // dataOffset 0xff.. -> 0 (checksum now wrong too)
  const r = await checkDisk(p, { repair: false });
  assert.deepEqual(fields(r, 'corruption'), ['checksum']);
  assert.deepEqual(fields(r, 'warning'), ['dataOffset']);
  await dryRunThenRepair(p, 2);
  assert.ok((await readAt(p, headerAt + 8, 8)).equals(Buffer.alloc(8, 0xff)));
  await qemuAgrees(t, p, expected);
});

test('vhd check: BAT entries past the end of the file, over the header or over another block are corruptions; repair marks them unused', async (t) => {
  const { p, batAt, headerAt, expected } = await vhdImage((await tmpDir(t)).path);
  const bat = await readAt(p, batAt, 32);
  await poke(p, batAt + 4 * 6, bat.subarray(4 * 3, 4 * 3 + 4)); // block 6 -> block 3's place (6 loses)
  await poke(p, batAt + 4 * 7, u32be(0x00ffffff)); // far past the end
  await poke(p, batAt + 4 * 2, u32be(headerAt / 512)); // over the dynamic header
  const r = await checkDisk(p, { repair: false });
  assert.deepEqual(fields(r, 'corruption'), ['BAT[2]', 'BAT[6]', 'BAT[7]']);
  assert.equal((await vdkit(['check', p])).code, 2);
  const report = await dryRunThenRepair(p, 2);
  assert.ok(report.findings.filter((f) => f.kind === 'corruption').every((f) => f.repaired));
  assert.ok((await content(p, VHD_SIZE)).equals(expected), 'dropped entries read as zeros, the rest as written');
  await qemuAgrees(t, p, expected);
});

test('vhd check: space before the footer that no block owns (a killed allocation) is a leak; repair moves the footer and cuts the file', async (t) => {
  const { p, expected } = await vhdImage((await tmpDir(t)).path);
  const size = (await stat(p)).size;
  const footer = await readAt(p, size - 512, 512);
  const stride = 512 + 2 * MiB;
  // what allocate() leaves when killed after writing the new footer and the block data
  await poke(p, size - 512, Buffer.alloc(stride, 0x33));
  await poke(p, size - 512 + stride, footer);
  const r = await checkDisk(p, { repair: false });
  assert.deepEqual(fields(r, 'corruption'), []);
  assert.deepEqual(fields(r, 'leak'), ['BAT']);
  assert.equal(r.leakedBytes, stride);
  assert.equal((await vdkit(['check', p])).code, 3);
  await dryRunThenRepair(p, 3);
  assert.equal((await stat(p)).size, size);
  assert.ok((await content(p, VHD_SIZE)).equals(expected));
  await qemuAgrees(t, p, expected);
});

test('vhd check: a fixed image with a bad footer checksum gets it recomputed (no other copy)', async (t) => {
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'f.vhd');
  const d = await Disk.create(p, { format: 'vhd', type: 'fixed', capacity: 4 * MiB });
  await d.write(MiB, pattern(1, MiB));
  await d.close();
  await poke(p, 4 * MiB + 64, Buffer.from([0, 0, 0, 1])); // the checksum itself
  assert.deepEqual(fields(await checkDisk(p, { repair: false }), 'corruption'), ['checksum']);
  await dryRunThenRepair(p, 2);
  const expected = Buffer.alloc(4 * MiB);
  pattern(1, MiB).copy(expected, MiB);
  assert.ok((await content(p, 4 * MiB)).equals(expected));
});

test('vhd check: a fixed image longer than its data (a shrink stopped after its footer switch) is a leak; repair cuts it, qemu reads the same', async (t) => {
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'f.vhd');
  const d = await Disk.create(p, { format: 'vhd', type: 'fixed', capacity: 4 * MiB });
  await d.write(MiB, pattern(1, MiB));
  await d.close();
  const footer = await readAt(p, 4 * MiB, 512);
  // the state a killed shrink leaves: the 4 MiB footer at the end of a 6 MiB (+512) file, with
  // the cut-off bytes and a stray footer copy in the slack
  await poke(p, 4 * MiB, Buffer.alloc(2 * MiB, 0x44));
  await poke(p, 6 * MiB, footer);
  const expected = Buffer.alloc(4 * MiB);
  pattern(1, MiB).copy(expected, MiB);
  assert.ok((await content(p, 4 * MiB)).equals(expected));
  await qemuAgrees(t, p, expected);
  const r = await checkDisk(p, { repair: false });
  assert.deepEqual(fields(r, 'corruption'), []);
  assert.deepEqual(fields(r, 'leak'), ['currentSize']);
  assert.equal(r.leakedBytes, 2 * MiB);
  assert.equal((await vdkit(['check', p])).code, 3);
  await dryRunThenRepair(p, 3);
  assert.equal((await stat(p)).size, 4 * MiB + 512);
  assert.ok((await content(p, 4 * MiB)).equals(expected));
  await qemuAgrees(t, p, expected);
  // a grow of such a file cuts the slack first: the new part reads zeros, not the old bytes
  await poke(p, 4 * MiB, Buffer.alloc(2 * MiB, 0x44));
  await poke(p, 6 * MiB, footer);
  assert.equal((await vdkit(['resize', p, String(8 * MiB)])).code, 0);
  const grown = Buffer.alloc(8 * MiB);
  expected.copy(grown);
  assert.ok((await content(p, 8 * MiB)).equals(grown));
  await qemuAgrees(t, p, grown);
});

// ------------------------------------------------------------------ dry run of the other formats

test('dry run: VMDK, qcow2 and VHDX report what a repair would do and change nothing', async (t) => {
  const dir = (await tmpDir(t)).path;
  // VMDK: leaked grains at the end
  const vmdk = join(dir, 'a.vmdk');
  let d = await Disk.create(vmdk, { capacity: 16 * MiB });
  await d.write(0, pattern(1, 200000));
  await d.close();
  await poke(vmdk, (await stat(vmdk)).size, Buffer.alloc(2 * 65536, 7));
  // qcow2: a cluster past the data with a refcount of 1 (a leak)
  const qcow2 = join(dir, 'a.qcow2');
  d = await Disk.create(qcow2, { format: 'qcow2', capacity: 16 * MiB });
  await d.write(0, pattern(2, 200000));
  await d.close();
  const qsize = (await stat(qcow2)).size;
  await truncate(qcow2, qsize + 65536);
  const qh = await readAt(qcow2, 0, 104);
  const rb = Number((await readAt(qcow2, Number(qh.readBigUInt64BE(48)), 8)).readBigUInt64BE(0));
  await poke(qcow2, rb + (qsize / 65536) * 2, Buffer.from([0, 1]));
  // VHDX: space after the last block that nothing references
  const vhdx = join(dir, 'a.vhdx');
  d = await Disk.create(vhdx, { format: 'vhdx', capacity: 16 * MiB });
  await d.write(0, pattern(3, 200000));
  await d.close();
  await truncate(vhdx, (await stat(vhdx)).size + 2 * MiB);
  for (const p of [vmdk, qcow2, vhdx]) {
    const r = await checkDisk(p, { repair: false });
    assert.deepEqual(fields(r, 'leak').length > 0, true, `${p}: a leak`);
    const report = await dryRunThenRepair(p, 3);
    assert.ok(report.findings.some((f) => f.repaired), `${p}: repaired`);
  }
  if (skipUnless(t, 'qemu-img')) for (const p of [vmdk, qcow2, vhdx]) assert.equal((await run('qemu-img', ['check', p])).code, 0, p);
});

test('check --dry-run needs --repair; a repair of a read-only image is refused', async (t) => {
  const { p } = await vhdImage((await tmpDir(t)).path);
  const r = await vdkit(['check', '--dry-run', p]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--repair/);
  const d = await Disk.open(p, { readOnly: true, singleLink: true });
  await assert.rejects(d.image.maintenance().check!({ repair: true }), /RDONLY|read-only/i);
  assert.ok((await d.image.maintenance().check!({ repair: true, dryRun: true })).dryRun);
  await d.close();
});

// ------------------------------------------------------------------ chains

test('check of a chain: a missing parent or one with another identity is a finding on the child (exit 2), a sound chain reports each link', async (t) => {
  const dir = (await tmpDir(t)).path;
  for (const format of ['vmdk', 'vhd', 'vdi']) {
    const base = join(dir, `base.${format}`);
    const d = await Disk.create(base, { format, capacity: 8 * MiB });
    await d.write(0, pattern(4, 65536));
    await d.close();
    const child = join(dir, `child.${format}`);
    await (await createChild(base, child, {})).close();
    const ok = await checkDisk(child, { repair: false });
    assert.deepEqual(ok.findings, [], `${format}: sound chain`);
    assert.equal(ok.links?.length, 1, `${format}: one parent link checked`);
    assert.equal(ok.links![0]!.path, base);
    // another identity: the parent is replaced by an unrelated image of the same name
    await writeFile(base + '.keep', await readFile(base));
    await (await Disk.create(base, { format, capacity: 8 * MiB, overwrite: true })).close();
    const other = await vdkit(['check', '--json', child]);
    assert.equal(other.code, 2, `${format}: ${other.stdout}${other.stderr}`);
    const rep = JSON.parse(other.stdout) as CheckReport;
    assert.equal(rep.findings[0]!.struct, 'chain');
    // missing
    await rm(base);
    const missing = await checkDisk(child, { repair: false });
    assert.deepEqual(fields(missing, 'corruption'), ['parent hint'], `${format}: ${JSON.stringify(missing.findings)}`);
    assert.match(missing.findings[0]!.message, /broken chain/);
    await writeFile(base, await readFile(base + '.keep'));
    assert.deepEqual((await checkDisk(child, { repair: false })).findings, [], `${format}: the parent back`);
  }
});
