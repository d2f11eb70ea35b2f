/**
 * The VixDiskLib compat API, continued: Shrink/Defragment through the Image contract (with
 * writes meanwhile, flat disks), Open of unknown formats, read-only connections, and the
 * Init/InitEx callbacks and config file.
 */
import assert from 'node:assert/strict';
import { mkdir, open, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk, DiskError } from '../../src/index.js';
import * as V from '../../src/compat/vixdisklib.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { S, rejectsVix, params, session } from './vixdisklib-support.js';

test('VixDiskLib: Shrink and Defragment go through Image.compact/defragment', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-vix-shrink-')).path;
  const path = join(dir, 's.vmdk');
  await session(async (cnx) => {
    await V.VixDiskLib_Create(cnx, path, params(8192));
    // today's drivers: whatever the VMDK driver says it can do decides the answer
    const probe = await Disk.open(path, { readOnly: true });
    const caps = probe.image.capabilities;
    await probe.close();
    const h = await V.VixDiskLib_Open(cnx, path, 0);
    if (caps.compact === 'none') await rejectsVix(V.VixDiskLib_Shrink(h, null, null), 'VIX_E_DISK_NOTSUPPORTED', 'Shrink without driver support');
    else assert.ok(await V.VixDiskLib_Shrink(h, null, null));
    if (caps.defragment === 'none') await rejectsVix(V.VixDiskLib_Defragment(h, null, null), 'VIX_E_DISK_NOTSUPPORTED', 'Defragment without driver support');
    else assert.ok(await V.VixDiskLib_Defragment(h, null, null));
    await V.VixDiskLib_Close(h);
    const ro = await V.VixDiskLib_Open(cnx, path, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
    await rejectsVix(V.VixDiskLib_Shrink(ro, null, null), 'VIX_E_DISK_RDONLY', 'Shrink of a read-only handle');
    await V.VixDiskLib_Close(ro);

    // a driver that implements them: the calls, their progress and cancellation reach it
    const calls: string[] = [];
    const realOpen = Disk.open;
    Disk.open = async function (p, o) {
      const d = await realOpen.call(Disk, p, o);
      const img = d.image as unknown as Record<string, unknown>;
      Object.defineProperty(img, 'capabilities', { value: { ...d.image.capabilities, compact: 'native', defragment: 'native' } });
      const m: Record<string, unknown> = {};
      img.maintenance = () => m;
      for (const what of ['compact', 'defragment'] as const) {
        m[what] = async (opts: { onProgress?: (d: number, t: number) => void; signal?: AbortSignal }) => {
          calls.push(what);
          for (let i = 0; i <= 4; i++) {
            if (opts.signal?.aborted) throw new Error('aborted');
            opts.onProgress?.(i, 4);
          }
          return { fileBytesBefore: 10, fileBytesAfter: 5 };
        };
      }
      return d;
    };
    try {
      const hh = await V.VixDiskLib_Open(cnx, path, 0);
      const seen: number[] = [];
      assert.deepEqual(await V.VixDiskLib_Shrink(hh, (_d, p) => void seen.push(p), null), { fileBytesBefore: 10, fileBytesAfter: 5 });
      assert.deepEqual(seen, [0, 25, 50, 75, 100]);
      assert.deepEqual(await V.VixDiskLib_Defragment(hh, null, null), { fileBytesBefore: 10, fileBytesAfter: 5 });
      await rejectsVix(V.VixDiskLib_Defragment(hh, (_d, p) => p < 50, null), 'VIX_E_DISK_CANCELLED', 'Defragment cancelled by its progress function');
      assert.deepEqual(calls, ['compact', 'defragment', 'defragment']);
      await V.VixDiskLib_Close(hh);
      // a redo log opened with its parents cannot be shrunk (the guide's CANTSHRINK)
      const ph = await V.VixDiskLib_Open(cnx, path, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
      await V.VixDiskLib_CreateChild(ph, join(dir, 's-000001.vmdk'), V.VIXDISKLIB_DISK_MONOLITHIC_SPARSE);
      await V.VixDiskLib_Close(ph);
      const ch = await V.VixDiskLib_Open(cnx, join(dir, 's-000001.vmdk'), 0);
      await rejectsVix(V.VixDiskLib_Shrink(ch, null, null), 'VIX_E_DISK_CANTSHRINK', 'Shrink of a redo log opened with its chain');
      await V.VixDiskLib_Close(ch);
    } finally {
      Disk.open = realOpen;
    }
  });
});

test('VixDiskLib_Shrink with Write calls made on the handle meanwhile: every write survives (the shrink runs alone)', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'r.vmdk');
  const MiB = 2 ** 20;
  const ok = async (cmd: string, args: string[]) => {
    const r = await run(cmd, args);
    assert.equal(r.code, 0, describeRun(cmd, args, r));
    return r;
  };
  await ok('qemu-img', ['create', '-q', '-f', 'vmdk', p, '64M']);
  // data everywhere, the lower half then zeroed: compact drops those grains and moves the rest down
  await ok('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x11 0 64M', '-c', 'write -z 0 32M', p]);
  await V.VixDiskLib_Init(1, 1, null, null, null, null);
  const conn = await V.VixDiskLib_Connect(null);
  const h = await V.VixDiskLib_Open(conn, p, 0);
  const expect = Buffer.alloc(64 * MiB, 0x11);
  expect.fill(0, 0, 32 * MiB);
  const shrink = V.VixDiskLib_Shrink(h, null, null);
  // a second task writes one sector into each grain of the upper half while the shrink runs
  const writes: Promise<number>[] = [];
  for (let g = 512; g < 1024; g++) {
    const buf = Buffer.alloc(512, 0xee);
    writes.push(V.VixDiskLib_Write(h, g * 128, 1, buf));
    buf.copy(expect, g * 65536);
    await new Promise((r) => setImmediate(r));
  }
  await shrink;
  await Promise.all(writes);
  const back = Buffer.alloc(64 * MiB);
  await V.VixDiskLib_Read(h, 0, (64 * MiB) / 512, back);
  assert.ok(back.equals(expect), 'the handle reads every write');
  await V.VixDiskLib_Close(h);
  const raw = join(dir, 'r.raw');
  await ok('qemu-img', ['convert', '-O', 'raw', p, raw]);
  const d = await Disk.open(raw, { readOnly: true, format: 'raw' });
  try {
    assert.ok((await d.read(0, 64 * MiB)).equals(expect), 'qemu-img reads every write after close');
  } finally {
    await d.close();
  }
  await ok('qemu-img', ['check', '-q', p]);
});

test('VixDiskLib_Open refuses a file of no known format (VIX_E_DISK_INVALIDDISK); raw only when the caller says so', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-vix-raw-')).path;
  const notes = join(dir, 'notes.bin');
  const text = Buffer.from('plain text, no disk image\n'.repeat(2521).slice(0, 64 * 1024));
  await writeFile(notes, text);
  await session(async (cnx) => {
    await rejectsVix(V.VixDiskLib_Open(cnx, notes, 0), 'VIX_E_DISK_INVALIDDISK', 'Open of a text file');
    await rejectsVix(V.VixDiskLib_Open(cnx, notes, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY | V.VIXDISKLIB_FLAG_OPEN_SINGLE_LINK), 'VIX_E_DISK_INVALIDDISK', 'read-only Open of a text file');
    await rejectsVix(V.VixDiskLib_Open(cnx, join(dir, 'missing.vmdk'), 0), 'VIX_E_DISK_FILENOTFOUND', 'Open of a missing file');
    assert.ok((await readFile(notes)).equals(text), 'the refused file is unchanged');
    // VDDK's way to raw data: a flat VMDK descriptor naming it as its extent
    const desc = join(dir, 'notes.vmdk');
    await writeFile(desc, '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\nRW 128 FLAT "notes.bin" 0\n\nddb.adapterType = "ide"\n');
    const viaDesc = await V.VixDiskLib_Open(cnx, desc, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
    const buf = Buffer.alloc(128 * S);
    await V.VixDiskLib_Read(viaDesc, 0, 128, buf);
    assert.ok(buf.equals(text), 'the descriptor reads the raw file');
    await V.VixDiskLib_Close(viaDesc);
    // vdkit's own flag says "raw": then it opens, reads and writes as raw
    const h = await V.VixDiskLib_Open(cnx, notes, V.VDKIT_FLAG_OPEN_RAW);
    assert.equal((await V.VixDiskLib_GetInfo(h)).capacity, 128);
    await V.VixDiskLib_Read(h, 0, 128, buf);
    assert.ok(buf.equals(text));
    await V.VixDiskLib_Write(h, 1, 1, Buffer.alloc(S, 0xab));
    await V.VixDiskLib_Close(h);
    const after = await readFile(notes);
    assert.ok(after.subarray(S, 2 * S).every((b) => b === 0xab) && after.subarray(0, S).equals(text.subarray(0, S)), 'the raw write landed in sector 1');
  });
});

test('VixDiskLib_ConnectEx(readOnly): every Open is read-only whatever its flags; Create, CreateChild, Grow, Unlink, Clone into it refuse', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-vix-rocnx-')).path;
  const path = join(dir, 'd.vmdk');
  await session(async (rw) => {
    await V.VixDiskLib_Create(rw, path, params(2048));
    const cnx = await V.VixDiskLib_ConnectEx(null, true, null, null);
    const h = await V.VixDiskLib_Open(cnx, path, 0);
    await rejectsVix(V.VixDiskLib_Write(h, 0, 1, Buffer.alloc(S, 1)), 'VIX_E_DISK_RDONLY', 'Write through a read-only connection');
    await rejectsVix(V.VixDiskLib_WriteMetadata(h, 'toolsVersion', '9'), 'VIX_E_DISK_RDONLY', 'WriteMetadata through a read-only connection');
    await rejectsVix(V.VixDiskLib_CreateChild(h, join(dir, 'c.vmdk'), V.VIXDISKLIB_DISK_MONOLITHIC_SPARSE), 'VIX_E_DISK_RDONLY', 'CreateChild');
    const buf = Buffer.alloc(S, 0xff);
    await V.VixDiskLib_Read(h, 0, 1, buf);
    assert.ok(buf.every((b) => b === 0), 'reads work, nothing was written');
    await V.VixDiskLib_Close(h);
    await rejectsVix(V.VixDiskLib_Create(cnx, join(dir, 'n.vmdk'), params(2048)), 'VIX_E_DISK_RDONLY', 'Create');
    await rejectsVix(V.VixDiskLib_Grow(cnx, path, 4096, false), 'VIX_E_DISK_RDONLY', 'Grow');
    await rejectsVix(V.VixDiskLib_Unlink(cnx, path), 'VIX_E_DISK_RDONLY', 'Unlink');
    await rejectsVix(V.VixDiskLib_Clone(cnx, join(dir, 'k.vmdk'), rw, path, params(0), null, null, false), 'VIX_E_DISK_RDONLY', 'Clone into it');
    await rejectsVix(V.VixDiskLib_CheckRepair(cnx, path, true), 'VIX_E_DISK_RDONLY', 'CheckRepair with repair');
    assert.ok(await V.VixDiskLib_CheckRepair(cnx, path, false), 'a check alone is fine');
    assert.deepEqual((await readdir(dir)).sort(), ['d.vmdk']);
    await V.VixDiskLib_Disconnect(cnx);
    // readOnly false: as Connect
    const w = await V.VixDiskLib_ConnectEx(null, false, null, 'file');
    const hw = await V.VixDiskLib_Open(w, path, 0);
    await V.VixDiskLib_Write(hw, 0, 1, Buffer.alloc(S, 1));
    await V.VixDiskLib_Close(hw);
    await V.VixDiskLib_Disconnect(w);
  });
});

test('VixDiskLib: Shrink and Defragment of flat disks do nothing and return VIX_OK (the guide)', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-vix-flat-')).path;
  await session(async (cnx) => {
    for (const [i, type] of [V.VIXDISKLIB_DISK_MONOLITHIC_FLAT, V.VIXDISKLIB_DISK_SPLIT_FLAT, V.VIXDISKLIB_DISK_VMFS_FLAT].entries()) {
      const path = join(dir, `f${i}.vmdk`);
      await V.VixDiskLib_Create(cnx, path, params(2048, type));
      const h = await V.VixDiskLib_Open(cnx, path, 0);
      await V.VixDiskLib_Write(h, 5, 1, Buffer.alloc(S, 0x42));
      const files = await readdir(dir);
      const seen: number[] = [];
      const r = await V.VixDiskLib_Shrink(h, (_d, p) => void seen.push(p), null);
      assert.equal(r.fileBytesBefore, r.fileBytesAfter, `type ${type}: Shrink changed nothing`);
      assert.deepEqual(seen, [0, 100]);
      const d = await V.VixDiskLib_Defragment(h, null, null);
      assert.equal(d.fileBytesBefore, d.fileBytesAfter);
      const buf = Buffer.alloc(S);
      await V.VixDiskLib_Read(h, 5, 1, buf);
      assert.ok(buf.every((b) => b === 0x42));
      await V.VixDiskLib_Close(h);
      assert.deepEqual(await readdir(dir), files);
      // still refused on a read-only handle: it asks for write access
      const ro = await V.VixDiskLib_Open(cnx, path, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
      await rejectsVix(V.VixDiskLib_Shrink(ro, null, null), 'VIX_E_DISK_RDONLY', 'Shrink of a read-only flat disk');
      await V.VixDiskLib_Close(ro);
    }
  });
});

test('VixDiskLib_Init callbacks: failed calls and open warnings reach warn, vdkit bugs reach panic, information reaches log', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-vix-cb-')).path;
  const logs: string[] = [];
  const warns: string[] = [];
  const panics: string[] = [];
  await V.VixDiskLib_Init(1, 0, (m) => void logs.push(m), (m) => void warns.push(m), (m) => void panics.push(m), null);
  try {
    const cnx = await V.VixDiskLib_Connect(null);
    assert.ok(logs.some((m) => /connected/.test(m)), `log got information: ${JSON.stringify(logs)}`);
    // a failed call: its VIX name and number, the file
    await rejectsVix(V.VixDiskLib_Open(cnx, join(dir, 'missing.vmdk'), 0), 'VIX_E_DISK_FILENOTFOUND', 'missing');
    assert.equal(warns.length, 1, JSON.stringify(warns));
    assert.match(warns[0]!, new RegExp(`VIX_E_DISK_FILENOTFOUND \\(${V.VIX_E_DISK_FILENOTFOUND}\\).*missing\\.vmdk`));
    assert.equal(panics.length, 0);
    // an open that tolerates damage says so: a qcow2 whose dirty bit is set, opened read-only
    const q = join(dir, 'dirty.qcow2');
    await (await Disk.create(q, { format: 'qcow2', capacity: 1 << 20 })).close();
    const fh = await open(q, 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 79);
    b[0] = b[0]! | 1; // incompatible_features bit 0: dirty
    await fh.write(b, 0, 1, 79);
    await fh.close();
    const h = await V.VixDiskLib_Open(cnx, q, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
    await V.VixDiskLib_Close(h);
    assert.ok(warns.some((m) => /dirty\.qcow2.*dirty bit/.test(m)), `warn got the open warning: ${JSON.stringify(warns)}`);
    // an internal error (a vdkit bug) also reaches panic; the call still rejects
    const realOpen = Disk.open;
    Disk.open = async () => {
      throw new DiskError('INTERNAL', 'simulated bug');
    };
    try {
      await rejectsVix(V.VixDiskLib_Open(cnx, q, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY), 'VIX_E_FAIL', 'internal error');
    } finally {
      Disk.open = realOpen;
    }
    assert.equal(panics.length, 1);
    assert.match(panics[0]!, /simulated bug/);
    await V.VixDiskLib_Disconnect(cnx);
  } finally {
    V.VixDiskLib_Exit();
  }
  // without warn/panic callbacks, all goes to log (VDDK's default handlers share one log)
  const only: string[] = [];
  await V.VixDiskLib_Init(1, 0, (m) => void only.push(m), null, null, null);
  try {
    await rejectsVix(V.VixDiskLib_Open(await V.VixDiskLib_Connect(null), join(dir, 'missing.vmdk'), 0), 'VIX_E_DISK_FILENOTFOUND', 'missing');
    assert.ok(only.some((m) => /VIX_E_DISK_FILENOTFOUND/.test(m)));
  } finally {
    V.VixDiskLib_Exit();
  }
});

test('VixDiskLib_InitEx config file: tmpDirectory log file, transport log level, NFC keys, unknown keys warned', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-vix-cfg-')).path;
  const logDir = join(dir, 'logs');
  await mkdir(logDir);
  const cfg = join(dir, 'vddk.conf');
  await writeFile(cfg, [
    '# VDDK config',
    `tmpDirectory = "${logDir}"`,
    'vixDiskLib.transport.LogLevel = "2"',
    'vixDiskLib.nfc.RequestTimeoutMs = "30000"',
    'vixDiskLib.noSuchKey = "1"',
    '',
  ].join('\n'));
  const logs: string[] = [];
  const warns: string[] = [];
  assert.equal(await V.VixDiskLib_InitEx(1, 1, (m) => void logs.push(m), (m) => void warns.push(m), null, null, cfg), V.VIX_OK);
  try {
    const c = V.vixDiskLibConfig();
    assert.equal(c.tmpDirectory, logDir);
    assert.equal(c.logLevel, 2);
    assert.equal(c.nfc.requestTimeoutMs, 30000);
    // level 2: warnings and errors only; the unknown key is a warning
    assert.ok(warns.some((m) => /unknown key vixDiskLib\.noSuchKey ignored/.test(m)), JSON.stringify(warns));
    const cnx = await V.VixDiskLib_Connect(null);
    assert.deepEqual(logs, [], 'information is below level 2');
    await rejectsVix(V.VixDiskLib_Open(cnx, join(dir, 'missing.vmdk'), 0), 'VIX_E_DISK_FILENOTFOUND', 'missing');
    const files = await readdir(logDir);
    assert.deepEqual(files, [`vixDiskLib-${process.pid}.log`]);
    const text = await readFile(join(logDir, files[0]!), 'utf8');
    assert.match(text, /unknown key vixDiskLib\.noSuchKey/);
    assert.match(text, /VIX_E_DISK_FILENOTFOUND/);
    assert.doesNotMatch(text, /connected/);
    await V.VixDiskLib_Disconnect(cnx);
  } finally {
    V.VixDiskLib_Exit();
  }
  // a config that cannot be honoured fails InitEx
  await writeFile(cfg, `tmpDirectory = "${join(dir, 'nowhere')}"\n`);
  await rejectsVix(V.VixDiskLib_InitEx(1, 1, null, null, null, null, cfg), 'VIX_E_DISK_INVAL', 'tmpDirectory that does not exist');
  await writeFile(cfg, 'vixDiskLib.transport.LogLevel = "loud"\n');
  await rejectsVix(V.VixDiskLib_InitEx(1, 1, null, null, null, null, cfg), 'VIX_E_DISK_INVAL', 'a log level that is no number');
  await rejectsVix(V.VixDiskLib_InitEx(1, 1, null, null, null, null, join(dir, 'missing.conf')), 'VIX_E_DISK_FILENOTFOUND', 'missing config file');
  await rejectsVix(V.VixDiskLib_Connect(null), 'VIX_E_DISK_NOINIT', 'a failed InitEx initialises nothing');
});
