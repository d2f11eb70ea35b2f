/**
 * Disk properties (VDGet/Set Uuid, ModificationUuid, ParentUuid, ParentModificationUuid,
 * Comment, PCHS/LCHS geometry, adapter type) per format, and the VD_OPEN_FLAGS_* open options
 * (infoOnly, honorZeroes, discard, shareable). Images come from qemu-img where it makes them;
 * what vdkit writes is checked by the outside tools that read it (vmdkinfo, qemu-img, vhdiinfo)
 * and by the raw bytes at the offsets the format references give (vdi.md, vhd.md), then read
 * back through a fresh open.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, DiskError } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { describeRun, repoRoot, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';

const MiB = 2 ** 20;
const VDKIT = join(repoRoot(), 'bin', 'vdkit.js');

async function qemuImg(args: string[]): Promise<string> {
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, describeRun('qemu-img', args, r));
  return r.stdout;
}

async function bytesAt(path: string, at: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(length);
    await fh.read(b, 0, length, at);
    return b;
  } finally {
    await fh.close();
  }
}

/** RFC 4122 text -> the 16 bytes in string order (VHD) */
const bigEndianUuid = (u: string) => Buffer.from(u.replace(/-/g, ''), 'hex');
/** RFC 4122 text -> the Microsoft GUID layout (first three groups little-endian): VDI, VHDX */
function guidBytes(u: string): Buffer {
  const b = bigEndianUuid(u);
  return Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8)]);
}

function notSupported(prop: string) {
  return (e: unknown) => e instanceof DiskError && e.code === 'NOTSUPPORTED' && e.message.includes(prop);
}

async function vdkit(args: string[], cwd: string) {
  return run(process.execPath, [VDKIT, ...args], { cwd });
}

test('VMDK: every property lands in the descriptor, vmdkinfo and qemu-img still read it, CID unchanged', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'vmdkinfo')) return;
  const dir = await tmpDir(t);
  const p = join(dir.path, 'a.vmdk');
  await qemuImg(['create', '-q', '-f', 'vmdk', p, '64M']);
  const props = {
    uuid: '0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0',
    modificationUuid: '11111111-2222-4333-8444-555555555555',
    parentUuid: '66666666-7777-4888-9999-aaaaaaaaaaaa',
    parentModificationUuid: 'bbbbbbbb-cccc-4ddd-8eee-ffffffffffff',
    comment: 'two\nlines with a \\ backslash',
    pchs: { cylinders: 130, heads: 16, sectors: 63 },
    lchs: { cylinders: 8, heads: 255, sectors: 63 },
    adapterType: 'lsilogic',
  };
  const d = await Disk.open(p);
  const cid = d.image.identity();
  await d.writeMetadata('uuid', '60 00 C2 95 3e 71 0a cd-44 1f 82 b9 6c 05 d7 e2');
  await d.setProperties(props);
  assert.equal(d.image.identity(), cid, 'metadata changes do not change the CID children link by');
  await d.close();

  const text = (await readFile(p)).toString('latin1');
  assert.match(text, /ddb\.uuid\.image = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"/);
  assert.match(text, /ddb\.uuid = "0f 1e 2d 3c 4b 5a 49 68-87 76 a5 b4 c3 d2 e1 f0"/, 'VMware ddb.uuid kept in step');
  assert.match(text, /ddb\.uuid\.modification = "11111111-2222-4333-8444-555555555555"/);
  assert.match(text, /ddb\.uuid\.parent = "66666666-7777-4888-9999-aaaaaaaaaaaa"/);
  assert.match(text, /ddb\.uuid\.parentmodification = "bbbbbbbb-cccc-4ddd-8eee-ffffffffffff"/);
  assert.match(text, /ddb\.comment = "two\\nlines with a \\\\ backslash"/);
  assert.match(text, /ddb\.geometry\.cylinders = "130"/);
  assert.match(text, /ddb\.geometry\.biosHeads = "255"/);
  assert.match(text, /ddb\.adapterType = "lsilogic"/);

  const vi = await run('vmdkinfo', [p]);
  assert.equal(vi.code, 0, describeRun('vmdkinfo', [p], vi));
  assert.match(vi.stdout, /Media size:\s+64 MiB/);
  const info = JSON.parse(await qemuImg(['info', '--output=json', p])) as { 'virtual-size': number; 'format-specific': { data: { cid: number } } };
  assert.equal(info['virtual-size'], 64 * MiB);
  assert.equal(info['format-specific'].data.cid, parseInt(cid!, 16));
  await qemuImg(['check', p]);

  const r = await Disk.open(p, { readOnly: true });
  assert.deepEqual(r.getProperties(), props);
  await r.close();

  const bad = await Disk.open(p);
  await assert.rejects(bad.setProperties({ adapterType: 'floppy' }), (e: unknown) => e instanceof DiskError && e.code === 'INVAL' && e.message.includes('adapter'));
  await assert.rejects(bad.setProperties({ comment: 'say "hi"' }), (e: unknown) => e instanceof DiskError && e.code === 'INVAL');
  await assert.rejects(bad.setProperties({ uuid: 'not-a-uuid' }), (e: unknown) => e instanceof DiskError && e.code === 'INVAL');
  await bad.close();
});

test('VDI: uuids, comment and LCHS at the header offsets of vdi.md; PCHS and adapter NOTSUPPORTED', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = await tmpDir(t);
  const p = join(dir.path, 'a.vdi');
  await qemuImg(['create', '-q', '-f', 'vdi', p, '64M']);
  const d = await Disk.open(p);
  const props = { uuid: '01234567-89ab-4def-8123-456789abcdef', modificationUuid: 'fedcba98-7654-4321-8fed-cba987654321', comment: 'VirtualBox comment ✓', lchs: { cylinders: 1024, heads: 16, sectors: 63 } };
  await d.setProperties(props);
  await assert.rejects(d.setProperties({ pchs: { cylinders: 1, heads: 1, sectors: 1 } }), notSupported('pchs'));
  await assert.rejects(d.setProperties({ adapterType: 'ide' }), notSupported('adapterType'));
  // a base records no parent: the driver refuses a parent uuid
  await assert.rejects(d.setProperties({ parentUuid: props.uuid }), notSupported('parentUuid'));
  await assert.rejects(d.setProperties({ lchs: { cylinders: 1025, heads: 16, sectors: 63 } }), (e: unknown) => e instanceof DiskError && e.code === 'INVAL');
  await d.close();

  const h = await bytesAt(p, 0, 0x200);
  const comment = h.subarray(0x54, 0x54 + 256);
  assert.equal(comment.subarray(0, comment.indexOf(0)).toString('utf8'), props.comment);
  assert.deepEqual(h.subarray(0x188, 0x198), guidBytes(props.uuid));
  assert.deepEqual(h.subarray(0x198, 0x1a8), guidBytes(props.modificationUuid));
  assert.deepEqual([h.readUInt32LE(0x1c8), h.readUInt32LE(0x1cc), h.readUInt32LE(0x1d0)], [1024, 16, 63]);
  await qemuImg(['check', p]);
  assert.equal(JSON.parse(await qemuImg(['info', '--output=json', p]))['virtual-size'], 64 * MiB);

  const r = await Disk.open(p, { readOnly: true });
  const got = r.getProperties();
  assert.deepEqual({ uuid: got.uuid, modificationUuid: got.modificationUuid, comment: got.comment, lchs: got.lchs }, props);
  assert.equal(got.pchs, undefined);
  assert.equal(got.parentUuid, undefined);
  await r.close();
});

test('VDI chain: a new uuid on a parent with a child is refused (API and CLI) unless forced; the child takes parent uuids', async (t) => {
  const dir = await tmpDir(t);
  const base = join(dir.path, 'base.vdi');
  const child = join(dir.path, 'child.vdi');
  await (await Disk.create(base, { format: 'vdi', capacity: 4 * MiB })).close();
  await (await createChild(base, child)).close();

  const b = await Disk.open(base, { force: true });
  const before = b.getProperties().uuid;
  await assert.rejects(b.setProperties({ uuid: 'new' }), (e: unknown) => e instanceof DiskError && e.code === 'RDONLY' && e.message.includes('child.vdi'));
  await b.setProperties({ comment: 'harmless to the child' });
  await b.close();

  const cli = await vdkit(['set', 'base.vdi', '--uuid', 'new'], dir.path);
  assert.equal(cli.code, 1, describeRun('vdkit', ['set'], cli));
  assert.match(cli.stderr, /child\.vdi/);
  const unchanged = await Disk.open(base, { readOnly: true });
  assert.equal(unchanged.getProperties().uuid, before);
  assert.equal(unchanged.getProperties().comment, 'harmless to the child');
  await unchanged.close();
  // the chain still opens
  await (await Disk.open(child, { readOnly: true })).close();

  // the child records the parent's uuids; set them to something else and the chain breaks
  const c = await Disk.open(child);
  const cp = c.getProperties();
  assert.equal(cp.parentUuid, before);
  const other = '99999999-8888-4777-8666-555555555555';
  await c.setProperties({ parentUuid: other, parentModificationUuid: other });
  await c.close();
  const raw = await bytesAt(child, 0x1a8, 32);
  assert.deepEqual(raw.subarray(0, 16), guidBytes(other));
  assert.deepEqual(raw.subarray(16), guidBytes(other));
  await assert.rejects(Disk.open(child, { readOnly: true }), DiskError);
  // ... but it can still be inspected alone (VD_OPEN_FLAGS_INFO)
  const alone = await Disk.open(child, { infoOnly: true });
  assert.equal(alone.readOnly, true);
  assert.equal(alone.getProperties().parentUuid, other);
  await alone.close();

  // forced: the uuid changes
  const forced = await vdkit(['set', 'base.vdi', '--uuid', '12345678-1234-4234-8234-123456789abc', '--force'], dir.path);
  assert.equal(forced.code, 0, describeRun('vdkit', ['set'], forced));
  assert.match(forced.stdout, /uuid: 12345678-1234-4234-8234-123456789abc/);
});

test('VHD: unique id in both footer copies (vhdiinfo reads it), geometry; the rest NOTSUPPORTED', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'vhdiinfo')) return;
  const dir = await tmpDir(t);
  const p = join(dir.path, 'a.vhd');
  await qemuImg(['create', '-q', '-f', 'vpc', p, '64M']);
  const d = await Disk.open(p);
  const uuid = '0a1b2c3d-4e5f-4061-8273-8495a6b7c8d9';
  await d.setProperties({ uuid });
  for (const prop of ['comment', 'lchs', 'adapterType', 'modificationUuid', 'parentUuid'] as const) {
    const value = prop === 'lchs' ? { cylinders: 1, heads: 1, sectors: 1 } : prop === 'comment' || prop === 'adapterType' ? 'x' : uuid;
    await assert.rejects(d.setProperties({ [prop]: value }), notSupported(prop));
  }
  // qemu sizes a "qemu" VHD by its geometry: one that changes the size is refused
  await assert.rejects(d.setProperties({ pchs: { cylinders: 100, heads: 16, sectors: 63 } }), (e: unknown) => e instanceof DiskError && e.code === 'INVAL');
  await d.close();

  const size = (await readFile(p)).length;
  for (const at of [0, size - 512]) assert.deepEqual(await bytesAt(p, at + 0x44, 16), bigEndianUuid(uuid), `footer copy at ${at}`);
  const vi = await run('vhdiinfo', [p]);
  assert.equal(vi.code, 0, describeRun('vhdiinfo', [p], vi));
  assert.match(vi.stdout, new RegExp(`Identifier\\s*: ${uuid}`));
  assert.equal(JSON.parse(await qemuImg(['info', '--output=json', p]))['virtual-size'] > 0, true);

  // a disk whose size follows the current-size field takes any geometry of the same product
  const q = join(dir.path, 'b.vhd');
  await (await Disk.create(q, { format: 'vhd', capacity: 100 * 16 * 63 * 512 })).close();
  const e = await Disk.open(q);
  const cap = e.capacity;
  await e.setProperties({ pchs: { cylinders: 200, heads: 8, sectors: 63 } });
  await e.close();
  const g = await bytesAt(q, (await readFile(q)).length - 512 + 0x38, 4);
  assert.deepEqual([g.readUInt16BE(0), g[2], g[3]], [200, 8, 63]);
  const r = await Disk.open(q, { readOnly: true });
  assert.deepEqual(r.getProperties().pchs, { cylinders: 200, heads: 8, sectors: 63 });
  assert.equal(r.capacity, cap);
  await r.close();
});

test('VHDX: the virtual disk id through the log; modification uuid is the DataWriteGuid vhdiinfo shows', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'vhdiinfo')) return;
  const dir = await tmpDir(t);
  const p = join(dir.path, 'a.vhdx');
  await qemuImg(['create', '-q', '-f', 'vhdx', p, '64M']);
  const uuid = '5c4b3a29-1807-4f6e-8d5c-4b3a29180706';
  const d = await Disk.open(p);
  await d.setProperties({ uuid });
  await assert.rejects(d.setProperties({ modificationUuid: uuid }), notSupported('modificationUuid'));
  await assert.rejects(d.setProperties({ pchs: { cylinders: 1, heads: 1, sectors: 1 } }), notSupported('pchs'));
  await assert.rejects(d.setProperties({ comment: 'x' }), notSupported('comment'));
  await d.close();
  await qemuImg(['check', p]);
  assert.ok((await readFile(p)).includes(guidBytes(uuid)), 'the new Virtual Disk ID is in the file');
  const r = await Disk.open(p, { readOnly: true });
  const got = r.getProperties();
  await r.close();
  assert.equal(got.uuid, uuid);
  const vi = await run('vhdiinfo', [p]);
  assert.equal(vi.code, 0, describeRun('vhdiinfo', [p], vi));
  assert.match(vi.stdout, new RegExp(`Identifier\\s*: ${got.modificationUuid}`));
});

test('qcow2 and raw store none: all undefined, every set NOTSUPPORTED naming the property', async (t) => {
  const dir = await tmpDir(t);
  for (const format of ['qcow2', 'raw']) {
    const p = join(dir.path, `a.${format}`);
    const d = await Disk.create(p, { format, capacity: MiB });
    assert.ok(Object.values(d.getProperties()).every((v) => v === undefined));
    await assert.rejects(d.setProperties({ uuid: 'new' }), notSupported('uuid'));
    await assert.rejects(d.setProperties({ comment: 'c' }), notSupported('comment'));
    await d.close();
  }
  const cli = await vdkit(['set', 'a.qcow2', '--adapter', 'ide'], dir.path);
  assert.equal(cli.code, 1);
  assert.match(cli.stderr, /NOTSUPPORTED.*adapterType/);
  const usage = await vdkit(['set', 'a.qcow2'], dir.path);
  assert.equal(usage.code, 2, usage.stderr);
});

test('CLI: set then info shows the properties (text and --json); info --no-chain opens a child whose parent is gone', async (t) => {
  const dir = await tmpDir(t);
  await (await Disk.create(join(dir.path, 'p.vmdk'), { capacity: 4 * MiB })).close();
  await (await createChild(join(dir.path, 'p.vmdk'), join(dir.path, 'c.vmdk'))).close();
  const set = await vdkit(['set', 'c.vmdk', '--uuid', 'new', '--comment', 'hello', '--geometry', '8/16/63', '--bios-geometry', '8/16/63', '--adapter', 'buslogic', '--parent-uuid', '00000000-0000-4000-8000-000000000001'], dir.path);
  assert.equal(set.code, 0, describeRun('vdkit', ['set'], set));
  const info = await vdkit(['info', 'c.vmdk'], dir.path);
  assert.equal(info.code, 0, info.stderr);
  assert.match(info.stdout, /comment: "hello"/);
  assert.match(info.stdout, /adapter type: buslogic/);
  const json = JSON.parse((await vdkit(['info', '--json', 'c.vmdk'], dir.path)).stdout) as { properties: Record<string, unknown> };
  assert.equal(json.properties.comment, 'hello');
  assert.deepEqual(json.properties.pchs, { cylinders: 8, heads: 16, sectors: 63 });
  assert.equal(json.properties.parentUuid, '00000000-0000-4000-8000-000000000001');
  assert.ok('modificationUuid' in json.properties, 'every property is listed');

  await rm(join(dir.path, 'p.vmdk'));
  const broken = await vdkit(['info', 'c.vmdk'], dir.path);
  assert.equal(broken.code, 1, 'a missing parent fails a normal open');
  const alone = await vdkit(['info', '--no-chain', '--json', 'c.vmdk'], dir.path);
  assert.equal(alone.code, 0, alone.stderr);
  assert.equal((JSON.parse(alone.stdout) as { properties: { comment: string } }).properties.comment, 'hello');
});

test('open flags: honorZeroes false discards all-zero units, default stores them; discard needs the flag; shareable read-write refused', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = await tmpDir(t);
  const data = xorshiftBytes(64 * 1024, 7);
  // 4 grains of 64 KiB: data, zero, zero, data, starting mid-cluster-0 so the edges are partial
  const payload = Buffer.concat([data.subarray(0, 32 * 1024), Buffer.alloc(2 * 64 * 1024 + 32 * 1024), data.subarray(0, 32 * 1024)]);
  const layout = async (honorZeroes: boolean | undefined) => {
    // VMDK sparse stores what it is given (qcow2 already turns zero writes into zero clusters)
    const p = join(dir.path, `z-${String(honorZeroes)}.vmdk`);
    await qemuImg(['create', '-q', '-f', 'vmdk', p, '1M']);
    const d = await Disk.open(p, honorZeroes === undefined ? {} : { honorZeroes });
    await d.write(32 * 1024, payload);
    const st = await d.blockStatus(0, 4 * 64 * 1024);
    assert.deepEqual(await d.read(32 * 1024, payload.length), payload);
    await d.close();
    await qemuImg(['check', p]);
    const back = await Disk.open(p, { readOnly: true });
    assert.deepEqual(await back.read(32 * 1024, payload.length), payload);
    await back.close();
    return st.filter((e) => e.state === 'data').reduce((n, e) => n + e.length, 0);
  };
  assert.equal(await layout(undefined), 4 * 64 * 1024, 'zeros stored as data by default');
  assert.equal(await layout(true), 4 * 64 * 1024);
  assert.equal(await layout(false), 2 * 64 * 1024, 'the two whole zero clusters take no space');

  // in a child, zero units must still hide the parent's data
  const parent = join(dir.path, 'zp.vmdk');
  await qemuImg(['create', '-q', '-f', 'vmdk', parent, '1M']);
  const pd = await Disk.open(parent);
  await pd.write(0, Buffer.concat([data, data, data, data]));
  await pd.close();
  await (await createChild(parent, join(dir.path, 'zc.vmdk'))).close();
  const cd = await Disk.open(join(dir.path, 'zc.vmdk'), { honorZeroes: false });
  await cd.write(32 * 1024, payload);
  await cd.close();
  const cr = await Disk.open(join(dir.path, 'zc.vmdk'), { readOnly: true });
  assert.deepEqual(await cr.read(32 * 1024, payload.length), payload);
  await cr.close();
  await qemuImg(['check', join(dir.path, 'zc.vmdk')]);

  const p = join(dir.path, 'd.qcow2');
  await qemuImg(['create', '-q', '-f', 'qcow2', p, '1M']);
  const plain = await Disk.open(p);
  await plain.write(0, data);
  await assert.rejects(plain.discard(0, 64 * 1024), notSupported('discard'));
  await plain.close();
  const withFlag = await Disk.open(p, { discard: true });
  await withFlag.discard(0, 64 * 1024);
  assert.deepEqual((await withFlag.blockStatus(0, 64 * 1024)).map((e) => e.state), ['unallocated']);
  assert.ok((await withFlag.read(0, 64 * 1024)).every((b) => b === 0));
  await withFlag.close();
  await qemuImg(['check', p]);
  await (await Disk.create(join(dir.path, 'r.raw'), { format: 'raw', capacity: MiB })).close();
  await assert.rejects(Disk.open(join(dir.path, 'r.raw'), { discard: true }), notSupported('discard'));

  // shareable: refused read-write (concurrent writers are not safe with cached metadata),
  // accepted read-only
  await assert.rejects(Disk.open(p, { shareable: true }), notSupported('shareable'));
  const b = await Disk.open(p, { readOnly: true, shareable: true });
  assert.equal(b.readOnly, true);
  await b.close();
});
