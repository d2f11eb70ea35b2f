import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Disk, DiskError, FileStore } from '../../src/index.js';

const TYPES = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'vmfs'] as const;
const SPLIT = 4192256 * 512;

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'vdkit-conf-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}


// Create, writes across grain and extent edges, reopen, block status and the generic info fields
// of every type are rows of the contract suite (contract.test.ts, "vmdk <type> file|memory");
// what is left here is what only a VMDK records.
test('a new base of every type: parentCID ffffffff, one extent per 2 GiB for the split types', async () => {
  await withDir(async (dir) => {
    for (const type of TYPES) {
      const path = join(dir, `${type}.vmdk`);
      const capacity = SPLIT + 3 * 1024 * 1024;
      await (await Disk.create(path, { type, capacity })).close();
      const r = await Disk.open(path, { readOnly: true });
      const info = await r.info();
      assert.equal(info.parentCid, 'ffffffff', type);
      assert.equal(info.extents.length, type.startsWith('twoGb') ? 2 : 1, type);
      await r.close();
    }
  });
});

test('CID changes on the first write of a session only; metadata persists', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'd.vmdk');
    const d = await Disk.create(path, { capacity: 1 << 20 });
    await d.close();
    const cidOf = async () => (await (await Disk.open(path, { readOnly: true }).then(async (x) => { const i = await x.info(); await x.close(); return i; }))).cid;
    const before = await cidOf();
    const w = await Disk.open(path);
    await w.write(0, Buffer.alloc(512, 1));
    const mid = (await w.info()).cid;
    await w.write(512, Buffer.alloc(512, 2));
    assert.equal((await w.info()).cid, mid, 'second write keeps the session CID');
    await w.writeMetadata('toolsVersion', '777');
    await w.writeMetadata('vdkit.custom', 'x y z');
    await w.close();
    assert.notEqual(mid, before);
    assert.equal(await cidOf(), mid);
    const r = await Disk.open(path, { readOnly: true });
    assert.equal(r.readMetadata('toolsVersion'), '777');
    assert.equal(r.readMetadata('ddb.vdkit.custom'), 'x y z');
    assert.ok(r.metadataKeys().includes('uuid'));
    const long = r.readMetadata('longContentID')!;
    assert.equal(long.slice(-8), mid, 'longContentID ends with the CID');
    await r.close();
    // a read-only session changes nothing
    const bytes = await readFile(path);
    const ro = await Disk.open(path, { readOnly: true });
    await ro.read(0, 4096);
    await ro.close();
    assert.deepEqual(await readFile(path), bytes);
  });
});

test('uncleanShutdown is set while open read-write and cleared on close', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'd.vmdk');
    const d = await Disk.create(path, { capacity: 1 << 20 });
    assert.equal((await readFile(path))[72], 1, 'set while open');
    await d.close();
    assert.equal((await readFile(path))[72], 0, 'cleared on close');
  });
});

test('redundant grain tables stay identical to the primary ones', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'd.vmdk');
    const d = await Disk.create(path, { capacity: 100 * 1024 * 1024 });
    for (let i = 0; i < 40; i++) await d.write(((i * 7919) % 1600) * 65536, Buffer.alloc(1000, i + 1));
    await d.close();
    const f = await readFile(path);
    const gd = Number(f.readBigUInt64LE(56));
    const rgd = Number(f.readBigUInt64LE(48));
    const gts = Math.ceil(100 * 1024 * 1024 / 512 / 128 / 512);
    for (let g = 0; g < gts; g++) {
      const a = f.readUInt32LE(gd * 512 + g * 4);
      const b = f.readUInt32LE(rgd * 512 + g * 4);
      assert.notEqual(a, b);
      assert.deepEqual(f.subarray(a * 512, a * 512 + 2048), f.subarray(b * 512, b * 512 + 2048), `GT ${g} == RGT ${g}`);
    }
  });
});

test('custom descriptor mixing FLAT, SPARSE and ZERO extents, unknown lines preserved', async () => {
  await withDir(async (dir) => {
    // make a 1 MiB sparse extent file by creating a split-style layout: use a monolithicSparse's file as an extent
    const sparseDisk = await Disk.create(join(dir, 'part.vmdk'), { capacity: 1 << 20 });
    await sparseDisk.write(0, Buffer.alloc(512, 0x5a));
    await sparseDisk.close();
    await writeFile(join(dir, 'a.bin'), Buffer.alloc(1 << 20, 0x11));
    await writeFile(join(dir, 'b.bin'), Buffer.concat([Buffer.alloc(4096, 0xee), Buffer.alloc(1 << 20, 0x22)]));
    const text = [
      '# Disk DescriptorFile',
      'version=1',
      'encoding="UTF-8"',
      'CID=fffffffe',
      'parentCID=ffffffff',
      'isNativeSnapshot="no"',
      'createType="custom"',
      '',
      '# Extent description',
      'RW 2048 FLAT "a.bin" 0',
      'RW 2048 ZERO',
      'RW 2048 SPARSE "part.vmdk"',
      'RDONLY 2048 FLAT "b.bin" 8',
      '',
      '# The Disk Data Base ',
      '#DDB',
      '',
      'ddb.adapterType = "buslogic"',
      'ddb.someVendorKey = "keep me"',
      '',
    ].join('\n');
    const path = join(dir, 'custom.vmdk');
    await writeFile(path, text);
    const d = await Disk.open(path);
    assert.equal(d.capacity, 4 << 20);
    assert.deepEqual(await d.read(0, 16), Buffer.alloc(16, 0x11));
    assert.deepEqual(await d.read((1 << 20) + 5, 16), Buffer.alloc(16, 0));
    assert.deepEqual(await d.read(2 << 20, 16), Buffer.alloc(16, 0x5a));
    assert.deepEqual(await d.read(3 << 20, 16), Buffer.alloc(16, 0x22));
    const st = await d.blockStatus();
    assert.deepEqual(st.find((s) => s.offset === 1 << 20), { offset: 1 << 20, length: 1 << 20, state: 'zero' });
    await assert.rejects(d.write((1 << 20) + 10, Buffer.alloc(10)), (e: DiskError) => e.code === 'PERMISSIONS');
    await assert.rejects(d.write((3 << 20) + 10, Buffer.alloc(10)), (e: DiskError) => e.code === 'RDONLY');
    await d.write(10, Buffer.alloc(10, 0x33));
    await d.close();
    const after = await readFile(path, 'utf8');
    // only the CID line changed
    const a = text.split('\n');
    const b = after.split('\n');
    assert.equal(b.length, a.length);
    const changed = a.map((l, i) => (l === b[i] ? -1 : i)).filter((i) => i >= 0);
    assert.deepEqual(changed, [3]);
    assert.match(b[3]!, /^CID=[0-9a-f]{8}$/);
  });
});

test('vmfs thin sets ddb.thinProvisioned; flat files are sparse until written', async () => {
  await withDir(async (dir) => {
    const d = await Disk.create(join(dir, 'e.vmdk'), { type: 'vmfs', thin: true, capacity: 1 << 30 });
    assert.equal(d.readMetadata('thinProvisioned'), '1');
    const info = await d.info();
    assert.ok(info.diskSize < 1 << 20, `disk size ${info.diskSize}`);
    assert.equal(info.extents[0]!.type, 'VMFS');
    await d.close();
    const desc = await readFile(join(dir, 'e.vmdk'), 'utf8');
    assert.match(desc, /^RW 2097152 VMFS "e-flat.vmdk"$/m);
    assert.match(desc, /^createType="vmfs"$/m);
  });
});

test('create refuses to replace files unless overwrite, and cleans up on failure', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'x.vmdk');
    await writeFile(join(dir, 'x-s002.vmdk'), 'in the way');
    await assert.rejects(Disk.create(path, { type: 'twoGbMaxExtentSparse', capacity: SPLIT + 1024 }), (e: DiskError) => e.code === 'FILEEXISTS');
    // nothing half-made is left behind
    await assert.rejects(readFile(join(dir, 'x-s001.vmdk')), /ENOENT/);
    await assert.rejects(readFile(path), /ENOENT/);
    assert.equal(await readFile(join(dir, 'x-s002.vmdk'), 'utf8'), 'in the way');
    const d = await Disk.create(path, { type: 'twoGbMaxExtentSparse', capacity: SPLIT + 1024, overwrite: true });
    await d.close();
  });
});

test('flat extent shorter than its line reads zeros past the file end', async () => {
  await withDir(async (dir) => {
    const d = await Disk.create(join(dir, 'f.vmdk'), { type: 'monolithicFlat', capacity: 1 << 20 });
    await d.write(0, Buffer.alloc(512, 7));
    await d.close();
    await truncate(join(dir, 'f-flat.vmdk'), 1024);
    const r = await Disk.open(join(dir, 'f.vmdk'), { readOnly: true });
    assert.deepEqual(await r.read(0, 512), Buffer.alloc(512, 7));
    assert.deepEqual(await r.read(4096, 512), Buffer.alloc(512));
    await r.close();
  });
});

test('sector helpers and capacity rounding', async () => {
  await withDir(async (dir) => {
    const d = await Disk.create(join(dir, 's.vmdk'), { capacity: 1000 }); // rounds up to 2 sectors
    assert.equal(d.capacity, 1024);
    assert.equal(d.sectorCount, 2);
    await d.writeSectors(1, Buffer.alloc(512, 9));
    assert.deepEqual(await d.readSectors(1, 1), Buffer.alloc(512, 9));
    await assert.rejects(d.writeSectors(2, Buffer.alloc(512)), (e: DiskError) => e.code === 'OUTOFRANGE');
    await assert.rejects(d.writeSectors(0, Buffer.alloc(100)), (e: DiskError) => e.code === 'INVAL');
    await d.close();
    await assert.rejects(d.read(0, 1), (e: DiskError) => e.code === 'CLOSED');
  });
});

test('a child (delta) link alone (singleLink) opens read-only with its parent hint, and refuses read-write', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'child.vmdk');
    await (await Disk.create(path, { type: 'twoGbMaxExtentSparse', capacity: 1 << 20 })).close();
    const text = (await readFile(path, 'utf8')).replace('parentCID=ffffffff', 'parentCID=1234abcd\nparentFileNameHint="base.vmdk"');
    await writeFile(path, text);
    // the whole chain: its parent is missing
    await assert.rejects(Disk.open(path, { readOnly: true }), (e: DiskError) => e.code === 'OPENPARENT' && e.message.includes('base.vmdk'));
    // one link alone: read-only only (a write would zero-fill instead of copying from the parent)
    await assert.rejects(Disk.open(path, { singleLink: true }), (e: DiskError) => e.code === 'PARTIALCHAIN' && e.message.includes('child.vmdk'));
    const r = await Disk.open(path, { readOnly: true, singleLink: true });
    const info = await r.info();
    assert.equal(info.parent, 'base.vmdk');
    assert.equal(info.parentCid, '1234abcd');
    await r.close();
  });
});

test('block status of a nearly 2 TiB sparse disk is quick (grain tables read in batches)', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'big.vmdk');
    const capacity = 2000 * 2 ** 30;
    const d = await Disk.create(path, { capacity });
    await d.write(capacity - 4096, Buffer.alloc(4096, 1));
    await d.write(2 ** 40, Buffer.alloc(100, 2));
    // what makes it quick is the number of reads (a time bound alone fails on a loaded
    // machine): the 64000 grain tables (128 MiB) must come in large batches, not one by one
    type ReadFn = (this: FileStore, into: Buffer, offset: number) => Promise<void>;
    const proto = FileStore.prototype as unknown as { readInto: ReadFn };
    const orig = proto.readInto;
    let reads = 0;
    proto.readInto = function (into, offset) {
      reads++;
      return orig.call(this, into, offset);
    };
    const t0 = performance.now();
    let st;
    try {
      st = await d.blockStatus();
    } finally {
      proto.readInto = orig;
    }
    const ms = performance.now() - t0;
    assert.deepEqual(
      st.filter((s) => s.state === 'data').map((s) => [s.offset, s.length]),
      [[2 ** 40, 65536], [capacity - 65536, 65536]],
    );
    assert.ok(reads > 0 && reads <= 1000, `block status made ${reads} reads of the file (64000 grain tables)`);
    assert.ok(ms < 60_000, `block status took ${ms.toFixed(0)} ms`);
    await d.close();
  });
});

test('a grain table write that fails (I/O error) leaves the handle reading what the file says', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'eio.vmdk');
    const d = await Disk.create(path, { capacity: 4 * 2 ** 20 });
    await d.write(0, Buffer.alloc(65536, 1));
    await d.flush();
    // the next small write (a grain table span; grains are 64 KiB) fails, as a full disk would
    type WriteFn = (this: FileStore, offset: number, data: Buffer) => Promise<void>;
    const proto = FileStore.prototype as unknown as { write: WriteFn };
    const orig = proto.write;
    proto.write = function (offset, data) {
      if (data.length < 65536) return Promise.reject(new DiskError('FILEIO', 'injected', { path }));
      return orig.call(this, offset, data);
    };
    try {
      await assert.rejects(d.write(65536 * 8, Buffer.alloc(65536, 2)), /injected/);
    } finally {
      proto.write = orig;
    }
    // the handle, and a fresh open, agree with the file: the grain is not there
    assert.ok((await d.read(65536 * 8, 65536)).equals(Buffer.alloc(65536)), 'the handle reads what the file holds');
    assert.ok((await d.read(0, 65536)).equals(Buffer.alloc(65536, 1)));
    await d.close();
    const again = await Disk.open(path, { readOnly: true });
    try {
      assert.ok((await again.read(65536 * 8, 65536)).equals(Buffer.alloc(65536)));
      assert.ok((await again.read(0, 65536)).equals(Buffer.alloc(65536, 1)));
    } finally {
      await again.close();
    }
  });
});
