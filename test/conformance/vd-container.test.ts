/**
 * The VD container (src/vd, issue 15 items 1-2): images stacked one by one with their own
 * format and VD_OPEN_FLAGS_*, getters and setters by image number, open flags that really
 * reopen, SHAREABLE refused, VDClose with delete, VD's "same data" rule, and cache images that
 * answer a second read without touching the slow base (counted on the base's store).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Disk, DiskError, VDisk, VD_LAST_IMAGE, vd } from '../../src/index.js';
import { hostFiles } from '../../src/storage/file.js';
import { NamespaceWrapper, StoreWrapper } from '../../src/storage/wrappers.js';
import type { ByteStore } from '../../src/storage/store.js';
import { tmpDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const fill = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));

const code = (c: string) => (err: unknown) => err instanceof DiskError && err.code === c;

/** counts the bytes read from the stores it opens (the "slow base") */
class CountingNamespace extends NamespaceWrapper {
  bytesRead = 0;
  override async open(name: string, opts?: { write?: boolean }): Promise<ByteStore> {
    const count = (n: number) => {
      this.bytesRead += n;
    };
    const inner = await super.open(name, opts);
    return new (class extends StoreWrapper {
      override read(offset: number, length: number) {
        count(length);
        return super.read(offset, length);
      }
      override readInto(into: Buffer, offset: number) {
        count(into.length);
        return super.readInto(into, offset);
      }
      override readZeroPadded(offset: number, length: number) {
        count(length);
        return super.readZeroPadded(offset, length);
      }
    })(inner);
  }
}

/** block status of one image file alone */
async function allocated(path: string, offset: number, length: number): Promise<string[]> {
  const d = await Disk.open(path, { singleLink: true, readOnly: true });
  try {
    return (await d.blockStatus(offset, length)).map((r) => r.state);
  } finally {
    await d.close();
  }
}

test('indexed getters and setters: size, file size, version, flags, name, UUIDs, comment, geometry', async (t) => {
  const dir = (await tmpDir(t)).path;
  const c = new VDisk();
  const base = join(dir, 'base.vdi');
  const uuid = '0f1e2d3c-4b5a-4968-8776-655443322110';
  await c.createBase('vdi', base, 4 * MiB, { comment: 'made by VDCreateBase', uuid, lchs: { cylinders: 8, heads: 16, sectors: 63 } });
  assert.equal(c.getCount(), 1);
  await c.write(0, fill(MiB, 1));
  await c.createDiff(undefined, join(dir, 'child.vdi'), { comment: 'the diff' });
  assert.equal(c.getCount(), 2);

  assert.equal(await c.getSize(0), 4 * MiB);
  assert.equal(await c.getSize(1), 4 * MiB);
  assert.ok((await c.getFileSize(0)) > MiB, 'the base holds a 1 MiB block');
  assert.ok((await c.getFileSize(1)) < (await c.getFileSize(0)), 'the empty child is smaller');
  assert.equal(typeof (await c.getVersion(0)), 'number');
  assert.equal(await c.getFormat(1), 'vdi');
  assert.equal(await c.getFilename(0), base);
  assert.equal(await c.getFilename(VD_LAST_IMAGE), join(dir, 'child.vdi'));
  assert.equal(await c.getImageFlags(0), vd.VD_IMAGE_FLAGS_NONE);
  assert.equal(await c.getImageFlags(1), vd.VD_IMAGE_FLAGS_DIFF);
  assert.equal(await c.getUuid(0), uuid);
  assert.equal(await c.getParentUuid(1), uuid, "the child records the base's UUID");
  assert.equal(await c.getComment(0), 'made by VDCreateBase');
  assert.equal(await c.getComment(1), 'the diff');
  assert.deepEqual(await c.getLCHSGeometry(0), { cylinders: 8, heads: 16, sectors: 63 });
  assert.ok(typeof (await c.getModificationUuid(1)) === 'string');
  await assert.rejects(c.getSize(2), code('INVAL'), 'no image 2');

  // the base is read-only while the diff is the top (VDOpen switches it) ...
  assert.equal(await c.getOpenFlags(0), vd.VD_OPEN_FLAGS_READONLY);
  assert.equal(await c.getOpenFlags(1), vd.VD_OPEN_FLAGS_NORMAL);
  await assert.rejects(c.setComment(0, 'x'), code('RDONLY'));
  // ... until it is reopened read-write for its metadata
  await c.setOpenFlags(0, vd.VD_OPEN_FLAGS_NORMAL);
  await c.setComment(0, 'changed');
  await c.setUuid(1);
  const newUuid = await c.getUuid(1);
  assert.ok(newUuid && newUuid !== uuid);
  await c.setOpenFlags(0, vd.VD_OPEN_FLAGS_READONLY);
  assert.equal(await c.getComment(0), 'changed');
  await assert.rejects(c.setComment(0, 'again'), code('RDONLY'));

  const dump = await c.dumpImages();
  assert.match(dump, /^container: 2 image\(s\), read-write, 4194304 bytes$/m);
  assert.match(dump, new RegExp(`^image 0: vdi \\S+ ${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} size=4194304 open=READONLY image=NONE uuid=${uuid}`, 'm'));
  assert.match(dump, /^image 1: vdi \S+ \S+child\.vdi size=4194304 open=NORMAL image=DIFF uuid=\S+ parent=0f1e2d3c/m);
  await c.closeAll();
  assert.equal(c.getCount(), 0);

  // what was set is in the files
  const again = new VDisk();
  await again.open('vdi', base, vd.VD_OPEN_FLAGS_READONLY);
  await again.open(undefined, join(dir, 'child.vdi'));
  assert.equal(await again.getComment(0), 'changed');
  assert.equal(await again.getUuid(1), newUuid);
  assert.deepEqual(await again.read(0, 4096), fill(MiB, 1).subarray(0, 4096));
  await again.closeAll();
});

test('VMDK geometry and image flags through the container', async (t) => {
  const dir = (await tmpDir(t)).path;
  const c = new VDisk();
  await c.createBase('vmdk', join(dir, 'split.vmdk'), 8 * MiB, { imageFlags: vd.VD_VMDK_IMAGE_FLAGS_SPLIT_2G, pchs: { cylinders: 16, heads: 16, sectors: 63 } });
  assert.equal(await c.getImageFlags(0), vd.VD_VMDK_IMAGE_FLAGS_SPLIT_2G);
  assert.deepEqual(await c.getPCHSGeometry(0), { cylinders: 16, heads: 16, sectors: 63 });
  await c.setLCHSGeometry(0, { cylinders: 4, heads: 255, sectors: 63 });
  assert.deepEqual(await c.getLCHSGeometry(0), { cylinders: 4, heads: 255, sectors: 63 });
  await c.closeAll();
  const f = new VDisk();
  await f.createBase('vmdk', join(dir, 'flat.vmdk'), 2 * MiB, { imageFlags: vd.VD_IMAGE_FLAGS_FIXED });
  assert.equal(await f.getImageFlags(0), vd.VD_IMAGE_FLAGS_FIXED);
  await assert.rejects(f.createDiff(undefined, join(dir, 'x.vmdk'), { imageFlags: vd.VD_IMAGE_FLAGS_FIXED }), code('NOTSUPPORTED'));
  await f.closeAll();
  await assert.rejects(new VDisk().createBase('qcow2', join(dir, 'q.qcow2'), MiB, { imageFlags: vd.VD_IMAGE_FLAGS_FIXED }), code('NOTSUPPORTED'));
});

test('open flags: SHAREABLE on a writable image is refused, READONLY reopens really read-only, INFO skips the link check', async (t) => {
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'b.qcow2');
  const child = join(dir, 'c.qcow2');
  const c = new VDisk();
  await c.createBase('qcow2', base, 4 * MiB);
  await c.write(0, fill(65536, 3));
  await c.createDiff(undefined, child);
  await c.closeAll();

  const v = new VDisk();
  await assert.rejects(v.open('qcow2', base, vd.VD_OPEN_FLAGS_SHAREABLE), code('NOTSUPPORTED'));
  assert.equal(v.getCount(), 0, 'nothing was stacked');
  await assert.rejects(v.open('qcow2', base, 1 << 12), code('INVAL'), 'a bit VD does not define');
  await assert.rejects(v.open('qcow2', child), code('PARTIALCHAIN'), 'image 0 must be a base');
  await v.open('qcow2', base, vd.VD_OPEN_FLAGS_READONLY | vd.VD_OPEN_FLAGS_SHAREABLE);
  await assert.rejects(v.write(0, Buffer.alloc(512)), code('RDONLY'));
  await assert.rejects(v.open('qcow2', base), code('INVALIDCHAIN'), 'a base is not a child of image 0');
  await v.open('qcow2', child, vd.VD_OPEN_FLAGS_HONOR_SAME | vd.VD_OPEN_FLAGS_SEQUENTIAL | vd.VD_OPEN_FLAGS_ASYNC_IO);
  await assert.rejects(v.setOpenFlags(1, vd.VD_OPEN_FLAGS_SHAREABLE), code('NOTSUPPORTED'));
  assert.equal(await v.getOpenFlags(1), vd.VD_OPEN_FLAGS_HONOR_SAME | vd.VD_OPEN_FLAGS_SEQUENTIAL | vd.VD_OPEN_FLAGS_ASYNC_IO);

  // READONLY: the top is closed and opened again read-only; a write fails at the image
  await v.setOpenFlags(1, vd.VD_OPEN_FLAGS_READONLY);
  assert.equal(v.isReadOnly(), true);
  await assert.rejects(v.write(0, Buffer.alloc(512)), code('RDONLY'));
  await v.setOpenFlags(1, vd.VD_OPEN_FLAGS_NORMAL);
  assert.equal(v.isReadOnly(), false);
  await v.write(MiB, fill(4096, 9));
  await v.closeAll();
  assert.deepEqual(await allocated(child, MiB, 4096), ['data'], 'the write reached the reopened child');

  // INFO: a child alone as image 0 (its parent is not asked for)
  const info = new VDisk();
  await info.open('qcow2', child, vd.VD_OPEN_FLAGS_INFO | vd.VD_OPEN_FLAGS_READONLY);
  assert.equal(await info.getImageFlags(0), vd.VD_IMAGE_FLAGS_DIFF);
  assert.deepEqual(await info.read(0, 512), Buffer.alloc(512), 'unallocated reads as zeros without the parent');
  await info.closeAll();
});

test('VDClose: the top goes (and its file with deleteFile); the image below is writable again', async (t) => {
  const dir = (await tmpDir(t)).path;
  const c = new VDisk();
  await c.createBase('vmdk', join(dir, 'b.vmdk'), 4 * MiB);
  await c.write(0, fill(4096, 1));
  await c.createDiff(undefined, join(dir, 'keep.vmdk'));
  await c.write(0, fill(4096, 2));
  await c.close(false);
  assert.ok(existsSync(join(dir, 'keep.vmdk')));
  assert.equal(await c.getOpenFlags(0), vd.VD_OPEN_FLAGS_NORMAL);
  assert.deepEqual(await c.read(0, 4096), fill(4096, 1));
  await c.createDiff(undefined, join(dir, 'gone.vmdk'));
  await c.write(0, fill(4096, 3));
  assert.deepEqual(await c.read(0, 4096), fill(4096, 3));
  await c.close(true);
  assert.equal(existsSync(join(dir, 'gone.vmdk')), false, 'deleted');
  assert.equal(c.getCount(), 1);
  await c.write(8192, fill(512, 4)); // the base is the writable top again
  assert.deepEqual(await c.read(0, 4096), fill(4096, 1));
  await c.close(false);
  assert.equal(c.getCount(), 0);
  await assert.rejects(c.read(0, 512), code('NOIO'));
  await assert.rejects(c.close(), code('NOIO'));
});

test('without HONOR_SAME a write of the bytes the stack already reads leaves the diff block unallocated', async (t) => {
  const dir = (await tmpDir(t)).path;
  const c = new VDisk();
  await c.createBase('qcow2', join(dir, 'b.qcow2'), 4 * MiB);
  await c.write(0, fill(256 * 1024, 5));
  await c.createDiff(undefined, join(dir, 'same.qcow2'));
  // one cluster the same, the next one different
  const w = Buffer.concat([fill(65536, 5), Buffer.alloc(65536, 0xee)]);
  await c.write(0, w);
  assert.deepEqual(await c.read(0, w.length), w);
  await c.closeAll();
  assert.deepEqual(await allocated(join(dir, 'same.qcow2'), 0, 131072), ['unallocated', 'data']);

  const h = new VDisk();
  await h.open('qcow2', join(dir, 'b.qcow2'), vd.VD_OPEN_FLAGS_READONLY);
  await h.createDiff(undefined, join(dir, 'honor.qcow2'), { openFlags: vd.VD_OPEN_FLAGS_HONOR_SAME });
  await h.write(0, fill(65536, 5));
  await h.closeAll();
  assert.deepEqual(await allocated(join(dir, 'honor.qcow2'), 0, 65536), ['data'], 'HONOR_SAME stores it');
});

test('a cache image answers the second read without touching the slow base, and follows writes', async (t) => {
  const dir = (await tmpDir(t)).path;
  const basePath = join(dir, 'slow.vmdk');
  const seed = new VDisk();
  await seed.createBase('vmdk', basePath, 8 * MiB);
  await seed.write(0, fill(2 * MiB, 7));
  await seed.closeAll();

  const slow = new CountingNamespace(hostFiles());
  const c = new VDisk();
  await c.open('vmdk', basePath, vd.VD_OPEN_FLAGS_NORMAL, { namespace: slow });
  await c.createCache('qcow2', join(dir, 'cache.qcow2'));
  const first = slow.bytesRead;
  const a = await c.read(100_000, 700_000); // unaligned, inside written data
  assert.deepEqual(a, fill(2 * MiB, 7).subarray(100_000, 800_000));
  assert.ok(slow.bytesRead - first >= 700_000, 'the first read went to the base');
  const z = await c.read(5 * MiB, 300_000); // never written: zeros must be cached too
  assert.deepEqual(z, Buffer.alloc(300_000));

  let before = slow.bytesRead;
  assert.deepEqual(await c.read(100_000, 700_000), a);
  assert.deepEqual(await c.read(5 * MiB, 300_000), z);
  assert.equal(slow.bytesRead, before, 'the second reads were answered by the cache');
  assert.ok(c.cacheStats()!.hits >= 2);

  // a write goes to the base and into the cached cluster, so the next read is right and still a hit
  await c.write(200_000, fill(1000, 99));
  before = slow.bytesRead;
  const b = await c.read(100_000, 700_000);
  assert.deepEqual(b.subarray(100_000, 101_000), fill(1000, 99));
  assert.equal(slow.bytesRead, before);
  // a write to a cluster not cached yet leaves it uncached: the read fills it from the base
  await c.write(7 * MiB + 10, fill(100, 42));
  assert.deepEqual(await c.read(7 * MiB, 200), Buffer.concat([Buffer.alloc(10), fill(100, 42), Buffer.alloc(90)]));

  // the cache persists: closed and opened again, it still answers without the base
  await c.cacheClose(false);
  await c.cacheOpen('qcow2', join(dir, 'cache.qcow2'));
  before = slow.bytesRead;
  assert.deepEqual(await c.read(100_000, 700_000), b);
  assert.equal(slow.bytesRead, before);
  await assert.rejects(c.createCache('qcow2', join(dir, 'second.qcow2')), code('INVAL'), 'one cache per container');
  await assert.rejects(c.cacheOpen('raw', basePath), code('INVAL'));
  await c.cacheClose(true);
  assert.equal(existsSync(join(dir, 'cache.qcow2')), false);
  await c.closeAll();

  // raw (or any fixed image) cannot say what it has not cached
  const r = new VDisk();
  await r.open('vmdk', basePath, vd.VD_OPEN_FLAGS_READONLY);
  await assert.rejects(r.createCache('raw', join(dir, 'c.raw')), code('NOTSUPPORTED'));
  await r.closeAll();
});

test('the cache stays across createDiff (nothing changes) and is emptied when an image is closed', async (t) => {
  const dir = (await tmpDir(t)).path;
  const slow = new CountingNamespace(hostFiles());
  const c = new VDisk({ namespace: slow });
  await c.createBase('vdi', join(dir, 'b.vdi'), 4 * MiB);
  await c.write(0, fill(MiB, 8));
  await c.createCache('vhd', join(dir, 'cache.vhd'), { namespace: hostFiles() });
  await c.read(0, MiB);
  await c.createDiff(undefined, join(dir, 'd.vdi'));
  let before = slow.bytesRead;
  assert.deepEqual(await c.read(0, MiB), fill(MiB, 8));
  assert.equal(slow.bytesRead, before, 'still cached after createDiff');
  await c.write(0, fill(4096, 9));
  assert.deepEqual((await c.read(0, 8192)).subarray(0, 4096), fill(4096, 9));
  // a merge changes nothing the disk reads either: still cached
  await c.createDiff(undefined, join(dir, 'd2.vdi'));
  await c.merge(2, 1);
  before = slow.bytesRead;
  assert.deepEqual((await c.read(0, MiB)).subarray(0, 8192), Buffer.concat([fill(4096, 9), fill(MiB, 8).subarray(4096, 8192)]));
  assert.equal(slow.bytesRead, before, 'still cached after the merge');
  assert.equal(c.getCount(), 2);
  await c.close(true); // the disk reads the base again: the cache must not serve the diff's bytes
  before = slow.bytesRead;
  assert.deepEqual(await c.read(0, MiB), fill(MiB, 8));
  assert.ok(slow.bytesRead > before, 'emptied: read from the base again');
  await c.closeAll();
});

test('VDCopyEx with the same-content shortcut reads nothing of the images below nImageFromSame', async (t) => {
  const dir = (await tmpDir(t)).path;
  const slow = new CountingNamespace(hostFiles());
  const a = new VDisk();
  await a.createBase('qcow2', join(dir, 'a0.qcow2'), 8 * MiB, { namespace: slow });
  await a.write(0, fill(4 * MiB, 1));
  const b = new VDisk();
  await a.copyEx(0, b, { path: join(dir, 'b0.vdi'), format: 'vdi' });
  await a.createDiff(undefined, join(dir, 'a1.qcow2'), { namespace: hostFiles() });
  await a.write(MiB, fill(65536, 2));
  await b.createDiff(undefined, join(dir, 'b1.vdi'));
  let before = slow.bytesRead;
  const r = await a.copyEx(1, b, { fromSame: 0, toSame: 0 });
  assert.equal(r.bytesWritten, 65536);
  assert.equal(r.bytesRead, 65536);
  assert.ok(slow.bytesRead - before < 65536, `the source base was not read for data (${slow.bytesRead - before} bytes of metadata at most)`);
  assert.deepEqual(await b.read(0, 8 * MiB), await a.read(0, 8 * MiB));
  // without the shortcut the whole disk is compared, the source base read too
  await a.write(6 * MiB, fill(512, 3));
  before = slow.bytesRead;
  const full = await a.copyEx(1, b);
  assert.ok(slow.bytesRead - before >= 3 * MiB, `the base was read (${slow.bytesRead - before} bytes)`);
  assert.ok(full.bytesWritten <= MiB, `only the changed chunk was written (${full.bytesWritten})`);
  assert.deepEqual(await b.read(0, 8 * MiB), await a.read(0, 8 * MiB));
  await assert.rejects(a.copyEx(1, a), code('NOTSUPPORTED'), 'no move inside one container');
  await a.closeAll();
  await b.closeAll();
});

test('DISCARD and IGNORE_FLUSH open flags', async (t) => {
  const dir = (await tmpDir(t)).path;
  const c = new VDisk();
  await c.createBase('qcow2', join(dir, 'q.qcow2'), 4 * MiB);
  await c.write(0, fill(MiB, 1));
  await assert.rejects(c.discardRanges([{ offset: 0, length: 65536 }]), code('NOTSUPPORTED'), 'not opened with DISCARD');
  await c.setOpenFlags(0, vd.VD_OPEN_FLAGS_DISCARD | vd.VD_OPEN_FLAGS_IGNORE_FLUSH);
  await c.discardRanges([{ offset: 0, length: 131072 }]);
  assert.deepEqual(await c.read(0, 131072), Buffer.alloc(131072));
  await c.flush(); // ignored, no error
  await c.closeAll();
  assert.deepEqual(await allocated(join(dir, 'q.qcow2'), 0, 196608), ['unallocated', 'data']);
  // a format that cannot discard is refused at open (VERR_VD_DISCARD_NOT_SUPPORTED)
  await assert.rejects(new VDisk().createBase('vmdk', join(dir, 'f.vmdk'), MiB, { imageFlags: vd.VD_IMAGE_FLAGS_FIXED, openFlags: vd.VD_OPEN_FLAGS_DISCARD }), /cannot discard/);
});
