/**
 * The VixDiskLib facade's fidelity to VDDK (issue 15 item 3), beyond vixdisklib.test.ts and
 * vixdisklib-maintenance.test.ts: every call that takes a path refuses a file of no known
 * format before changing it, Shrink/Defragment of every preallocated type is a no-op, repairs
 * made by a read-write open reach the warn callback, vdkit's own bugs reach panic, and a config
 * file that is no file fails InitEx.
 */
import assert from 'node:assert/strict';
import { mkdir, open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk } from '../../src/index.js';
import { vhdxLogHooks } from '../../src/formats/vhdx/log.js';
import * as V from '../../src/compat/vixdisklib.js';
import { skipUnless, tmpDir } from '../helpers/tools.js';
import { S, qemu, rejectsVix, params, session } from './vixdisklib-support.js';

const MiB = 1024 * 1024;

test('VixDiskLib: Grow, Unlink, Rename, CheckRepair and Clone refuse a file of no known format (VIX_E_DISK_INVALIDDISK) and leave it as it was', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-vix-notdisk-')).path;
  const notes = join(dir, 'notes.txt');
  const text = Buffer.from('minutes of the meeting, not a disk image\n'.repeat(100));
  await writeFile(notes, text);
  await session(async (cnx) => {
    // each of these used to take the file as a raw disk: Grow appended zeros, Unlink deleted
    // it, Rename moved it, Clone copied it into a new disk
    await rejectsVix(V.VixDiskLib_Grow(cnx, notes, 100, false), 'VIX_E_DISK_INVALIDDISK', 'Grow');
    await rejectsVix(V.VixDiskLib_Unlink(cnx, notes), 'VIX_E_DISK_INVALIDDISK', 'Unlink');
    await rejectsVix(V.VixDiskLib_Rename(notes, join(dir, 'moved.vmdk')), 'VIX_E_DISK_INVALIDDISK', 'Rename');
    await rejectsVix(V.VixDiskLib_CheckRepair(cnx, notes, true), 'VIX_E_DISK_INVALIDDISK', 'CheckRepair with repair');
    await rejectsVix(V.VixDiskLib_Clone(cnx, join(dir, 'copy.vmdk'), cnx, notes, params(0), null, null, false), 'VIX_E_DISK_INVALIDDISK', 'Clone of it');
    assert.deepEqual(await readdir(dir), ['notes.txt'], 'nothing made, moved or deleted');
    assert.ok((await readFile(notes)).equals(text), 'the file is unchanged');
    // the same calls on a disk image still work
    const disk = join(dir, 'd.vmdk');
    await V.VixDiskLib_Create(cnx, disk, params(2048));
    await V.VixDiskLib_Grow(cnx, disk, 4096, false);
    await V.VixDiskLib_Clone(cnx, join(dir, 'copy.vmdk'), cnx, disk, params(0), null, null, false);
    assert.ok(await V.VixDiskLib_CheckRepair(cnx, disk, true));
    await V.VixDiskLib_Rename(disk, join(dir, 'e.vmdk'));
    await V.VixDiskLib_Unlink(cnx, join(dir, 'e.vmdk'));
    assert.deepEqual((await readdir(dir)).sort(), ['copy.vmdk', 'notes.txt']);
  });
});

test('VixDiskLib: Shrink and Defragment of fixed VHD and VHDX and static VDI disks do nothing and return VIX_OK (the guide)', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t, 'vdkit-vix-fixed-')).path;
  await session(async (cnx) => {
    for (const [name, args] of [
      ['fixed.vhd', ['-f', 'vpc', '-o', 'subformat=fixed']],
      ['fixed.vhdx', ['-f', 'vhdx', '-o', 'subformat=fixed,block_size=1M']],
      ['static.vdi', ['-f', 'vdi', '-o', 'static=on']],
    ] as const) {
      const path = join(dir, name);
      await qemu(['create', '-q', ...args, path, '4M']);
      const h = await V.VixDiskLib_Open(cnx, path, 0);
      await V.VixDiskLib_Write(h, 9, 1, Buffer.alloc(S, 0x5a));
      await V.VixDiskLib_Flush(h);
      const size = (await stat(path)).size;
      const seen: number[] = [];
      const r = await V.VixDiskLib_Shrink(h, (_d, p) => void seen.push(p), null);
      assert.equal(r.fileBytesAfter, r.fileBytesBefore, `${name}: Shrink changed nothing`);
      assert.deepEqual(seen, [0, 100], `${name}: progress`);
      const d = await V.VixDiskLib_Defragment(h, null, null);
      assert.equal(d.fileBytesAfter, d.fileBytesBefore, `${name}: Defragment changed nothing`);
      const buf = Buffer.alloc(S);
      await V.VixDiskLib_Read(h, 9, 1, buf);
      assert.ok(buf.every((b) => b === 0x5a), `${name}: the data is still there`);
      await V.VixDiskLib_Close(h);
      assert.equal((await stat(path)).size, size, `${name}: file size`);
      if (!name.endsWith('.vhd')) await qemu(['check', '-q', path]);
    }
  });
});

/** a VHDX whose last metadata change is in the log only: its writer stopped after the log flush */
async function vhdxWithPendingLog(path: string): Promise<void> {
  const d = await Disk.create(path, { format: 'vhdx', capacity: 8 * MiB, blockSize: MiB });
  await d.write(0, Buffer.alloc(4096, 0x11));
  await d.flush();
  await d.write(5 * MiB, Buffer.alloc(4096, 0x22));
  vhdxLogHooks.afterLogFlush = () => {
    throw new Error('stopped after the log flush');
  };
  try {
    await assert.rejects(d.flush(), /stopped after the log flush/);
  } finally {
    vhdxLogHooks.afterLogFlush = undefined;
  }
  await d.close();
}

test('VixDiskLib_Init callbacks: what a read-write Open repairs (a VHDX log replayed, a qcow2 dirty bit) reaches warn', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-vix-repair-')).path;
  const vhdx = join(dir, 'log.vhdx');
  await vhdxWithPendingLog(vhdx);
  const qcow2 = join(dir, 'dirty.qcow2');
  await (await Disk.create(qcow2, { format: 'qcow2', capacity: MiB })).close();
  const fh = await open(qcow2, 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, 79);
  b[0] = b[0]! | 1; // incompatible_features bit 0: dirty
  await fh.write(b, 0, 1, 79);
  await fh.close();
  const warns: string[] = [];
  await V.VixDiskLib_Init(1, 0, null, (m) => void warns.push(m), null, null);
  try {
    const cnx = await V.VixDiskLib_Connect(null);
    const h = await V.VixDiskLib_Open(cnx, vhdx, 0);
    assert.ok(warns.some((m) => /log\.vhdx: .*log held .* replayed/.test(m)), `warn got the log replay: ${JSON.stringify(warns)}`);
    const buf = Buffer.alloc(S);
    await V.VixDiskLib_Read(h, (5 * MiB) / S, 1, buf);
    assert.ok(buf.every((x) => x === 0x22), 'the replayed write reads back');
    await V.VixDiskLib_Close(h);
    const q = await V.VixDiskLib_Open(cnx, qcow2, 0);
    await V.VixDiskLib_Close(q);
    assert.ok(warns.some((m) => /dirty\.qcow2: .*refcounts rebuilt/.test(m)), `warn got the refcount rebuild: ${JSON.stringify(warns)}`);
    // repaired once: the next opens have nothing to say
    const count = warns.length;
    await V.VixDiskLib_Close(await V.VixDiskLib_Open(cnx, vhdx, 0));
    await V.VixDiskLib_Close(await V.VixDiskLib_Open(cnx, qcow2, 0));
    assert.equal(warns.length, count, JSON.stringify(warns.slice(count)));
    await V.VixDiskLib_Disconnect(cnx);
  } finally {
    V.VixDiskLib_Exit();
  }
});

test('VixDiskLib: an exception that is no file error (a vdkit bug) is VIX_E_FAIL and reaches panic, not VIX_E_DISK_FILEIO', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-vix-bug-')).path;
  const path = join(dir, 'd.vmdk');
  const warns: string[] = [];
  const panics: string[] = [];
  await V.VixDiskLib_Init(1, 0, null, (m) => void warns.push(m), (m) => void panics.push(m), null);
  try {
    const cnx = await V.VixDiskLib_Connect(null);
    await V.VixDiskLib_Create(cnx, path, params(2048));
    const realOpen = Disk.open;
    Disk.open = async () => {
      throw new TypeError("Cannot read properties of undefined (reading 'extents')");
    };
    try {
      const e = await rejectsVix(V.VixDiskLib_Open(cnx, path, 0), 'VIX_E_FAIL', 'a TypeError');
      assert.equal(e.code, 'INTERNAL');
      assert.match(e.message, /TypeError: Cannot read properties/);
    } finally {
      Disk.open = realOpen;
    }
    assert.equal(panics.length, 1, JSON.stringify(panics));
    assert.match(panics[0]!, /VIX_E_FAIL \(1\).*TypeError/);
    // a system error stays what it is: a missing file, no panic
    await rejectsVix(V.VixDiskLib_Open(cnx, join(dir, 'missing.vmdk'), 0), 'VIX_E_DISK_FILENOTFOUND', 'missing');
    assert.equal(panics.length, 1);
    assert.equal(V.vixErrorOf(new RangeError('offset out of range')), V.VIX_E_FAIL);
    assert.equal(V.vixErrorOf(Object.assign(new Error('EACCES'), { code: 'EACCES' })), V.VIX_ERRORS.VIX_E_DISK_FILENOPERMISSION!.number);
    await V.VixDiskLib_Disconnect(cnx);
  } finally {
    V.VixDiskLib_Exit();
  }
});

test('VixDiskLib_InitEx: a config file that is no regular file fails with VIX_E_DISK_INVAL naming it', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-vix-cfgdir-')).path;
  const cfgDir = join(dir, 'vddk.conf');
  await mkdir(cfgDir);
  const e = await rejectsVix(V.VixDiskLib_InitEx(1, 1, null, null, null, null, cfgDir), 'VIX_E_DISK_INVAL', 'a directory as config file');
  assert.equal(e.details.field, 'configFile');
  assert.equal(e.details.path, cfgDir);
  await rejectsVix(V.VixDiskLib_Connect(null), 'VIX_E_DISK_NOINIT', 'nothing initialised');
});
