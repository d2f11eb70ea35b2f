/**
 * The VixDiskLib compat API: sector units, create params (types, adapters), open flags, error
 * codes and numbers, clone progress, QueryAllocatedBlocks against qemu-img map, Grow/Rename/
 * Unlink/Attach/CheckRepair checked with qemu-img, Shrink/Defragment through the Image contract.
 */
import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { ERROR_TABLE } from '../../src/index.js';
import * as V from '../../src/compat/vixdisklib.js';
import { skipUnless, tmpDir } from '../helpers/tools.js';
import { descriptorText, qemuMap, Rng, seedOf } from './support.js';
import { S, qemu, qemuIo, qinfo, rejectsVix, params, session } from './vixdisklib-support.js';

test('VixDiskLib: error table, numbers, GetErrorText, library state', async (t) => {
  // the guide's texts for a few codes, by number and by name; the low 16 bits are the code
  assert.equal(V.VixDiskLib_GetErrorText(16000, null), 'One of the parameters supplied is invalid');
  assert.equal(V.VixDiskLib_GetErrorText(V.VIX_E_DISK_OUTOFRANGE), 'You have requested access to an area of the virtual disk that is out of bounds');
  assert.equal(V.VixDiskLib_GetErrorText((7n << 32n) | 16007n), V.VixDiskLib_GetErrorText(16007));
  assert.equal(V.VixDiskLib_GetErrorText('VIX_E_DISK_CANTSHRINK'), 'The specified virtual disk cannot be shrunk because it is not the parent disk');
  assert.equal(V.VixDiskLib_GetErrorText(V.VIX_OK), 'The operation completed successfully');
  assert.match(V.VixDiskLib_GetErrorText(65000), /Unknown error 65000/);
  assert.equal(V.VIX_ERROR_CODE((3n << 40n) | 16013n), 16013);
  // VMware's public vix.h (open-vm-tools open-vm-tools/lib/include/vix.h at 004c98fb, enum of
  // VixError, the block its comment says is copied into vixDiskLib.h): the general codes and
  // every disk-library code it defines, as (name, number) pairs
  const VIX_H: [string, number][] = [
    ['VIX_OK', 0], ['VIX_E_FAIL', 1], ['VIX_E_OUT_OF_MEMORY', 2], ['VIX_E_INVALID_ARG', 3], ['VIX_E_FILE_NOT_FOUND', 4],
    ['VIX_E_OBJECT_IS_BUSY', 5], ['VIX_E_NOT_SUPPORTED', 6], ['VIX_E_FILE_ERROR', 7], ['VIX_E_DISK_FULL', 8],
    ['VIX_E_INCORRECT_FILE_TYPE', 9], ['VIX_E_CANCELLED', 10], ['VIX_E_FILE_READ_ONLY', 11], ['VIX_E_FILE_ALREADY_EXISTS', 12],
    ['VIX_E_FILE_ACCESS_ERROR', 13], ['VIX_E_REQUIRES_LARGE_FILES', 14], ['VIX_E_FILE_ALREADY_LOCKED', 15], ['VIX_E_VMDB', 16],
    ['VIX_E_NOT_SUPPORTED_ON_REMOTE_OBJECT', 20], ['VIX_E_FILE_TOO_BIG', 21], ['VIX_E_FILE_NAME_INVALID', 22], ['VIX_E_ALREADY_EXISTS', 23],
    ['VIX_E_BUFFER_TOOSMALL', 24], ['VIX_E_OBJECT_NOT_FOUND', 25], ['VIX_E_HOST_NOT_CONNECTED', 26], ['VIX_E_INVALID_UTF8_STRING', 27],
    ['VIX_E_UNFINISHED_JOB', 29], ['VIX_E_NEED_KEY', 30], ['VIX_E_OPERATION_ALREADY_IN_PROGRESS', 31], ['VIX_E_LICENSE', 32],
    ['VIX_E_VM_HOST_DISCONNECTED', 34], ['VIX_E_AUTHENTICATION_FAIL', 35], ['VIX_E_HOST_CONNECTION_LOST', 36], ['VIX_E_DUPLICATE_NAME', 41],
    ['VIX_E_HOST_NETBLKDEV_HANDSHAKE', 14006], ['VIX_E_HOST_SOCKET_CREATION_ERROR', 14007], ['VIX_E_HOST_SERVER_NOT_FOUND', 14008],
    ['VIX_E_HOST_NETWORK_CONN_REFUSED', 14009], ['VIX_E_HOST_TCP_SOCKET_ERROR', 14010], ['VIX_E_HOST_TCP_CONN_LOST', 14011],
    ['VIX_E_DISK_INVAL', 16000], ['VIX_E_DISK_NOINIT', 16001], ['VIX_E_DISK_NOIO', 16002], ['VIX_E_DISK_PARTIALCHAIN', 16003],
    ['VIX_E_DISK_NEEDSREPAIR', 16006], ['VIX_E_DISK_OUTOFRANGE', 16007], ['VIX_E_DISK_CID_MISMATCH', 16008], ['VIX_E_DISK_CANTSHRINK', 16009],
    ['VIX_E_DISK_PARTMISMATCH', 16010], ['VIX_E_DISK_UNSUPPORTEDDISKVERSION', 16011], ['VIX_E_DISK_OPENPARENT', 16012],
    ['VIX_E_DISK_NOTSUPPORTED', 16013], ['VIX_E_DISK_NEEDKEY', 16014], ['VIX_E_DISK_NOKEYOVERRIDE', 16015], ['VIX_E_DISK_NOTENCRYPTED', 16016],
    ['VIX_E_DISK_NOKEY', 16017], ['VIX_E_DISK_INVALIDPARTITIONTABLE', 16018], ['VIX_E_DISK_NOTNORMAL', 16019], ['VIX_E_DISK_NOTENCDESC', 16020],
    ['VIX_E_DISK_NEEDVMFS', 16022], ['VIX_E_DISK_RAWTOOBIG', 16024], ['VIX_E_DISK_TOOMANYOPENFILES', 16027], ['VIX_E_DISK_TOOMANYREDO', 16028],
    ['VIX_E_DISK_RAWTOOSMALL', 16029], ['VIX_E_DISK_INVALIDCHAIN', 16030], ['VIX_E_DISK_KEY_NOTFOUND', 16052],
    ['VIX_E_DISK_SUBSYSTEM_INIT_FAIL', 16053], ['VIX_E_DISK_INVALID_CONNECTION', 16054], ['VIX_E_DISK_ENCODING', 16061],
    ['VIX_E_DISK_CANTREPAIR', 16062], ['VIX_E_DISK_INVALIDDISK', 16063], ['VIX_E_DISK_NOLICENSE', 16064], ['VIX_E_DISK_NODEVICE', 16065],
    ['VIX_E_DISK_UNSUPPORTEDDEVICE', 16066], ['VIX_E_DISK_CAPACITY_MISMATCH', 16067], ['VIX_E_DISK_PARENT_NOTALLOWED', 16068],
    ['VIX_E_DISK_ATTACH_ROOTLINK', 16069],
  ];
  const vixh = new Map(VIX_H);
  const vixhNumbers = new Set(VIX_H.map(([, n]) => n));
  // every disk-library code of vix.h is in the table, with vix.h's number
  for (const [name, n] of VIX_H) {
    if (!name.startsWith('VIX_E_DISK_')) continue;
    assert.ok(name in V.VIX_ERRORS, `${name} (vix.h ${n}) is in the table`);
  }
  // every row: vix.h's number where vix.h defines the name, else vdkit's own, said so, and never a number vix.h uses
  for (const [name, row] of Object.entries(V.VIX_ERRORS)) {
    assert.ok(Number.isSafeInteger(row.number) && row.number >= 0, `${name} has a number`);
    if (vixh.has(name)) {
      assert.equal(row.number, vixh.get(name), `${name}: vix.h's number`);
      assert.equal(row.origin, 'vix.h', `${name}: origin`);
    } else if (name !== 'VIX_E_DISK_SUCCESS') {
      assert.equal(row.origin, 'vdkit', `${name} is not in vix.h: its number is vdkit's own`);
      assert.ok(V.VDKIT_OWN_NUMBERS.includes(name), `${name} listed in VDKIT_OWN_NUMBERS`);
      assert.ok(!vixhNumbers.has(row.number), `${name}: vdkit's ${row.number} is a number vix.h gives another name`);
    }
  }
  for (const name of V.VDKIT_OWN_NUMBERS) assert.ok(!vixh.has(name), `${name} is vix.h's, not vdkit's`);
  // the guide's names vix.h lacks: vdkit codes keep their DiskError number, the rest are numbered from 16900
  assert.equal(V.VIX_ERRORS.VIX_E_DISK_RDONLY!.number, ERROR_TABLE.RDONLY.number);
  assert.equal(V.VIX_ERRORS.VIX_E_DISK_ASYNC!.origin, 'vdkit');
  assert.ok(V.VIX_ERRORS.VIX_E_DISK_ASYNC!.number >= V.VDKIT_OWN_BASE);
  assert.equal(V.VixDiskLib_GetErrorText(V.VIX_ERRORS.VIX_E_DISK_UPDATEGEN!.number), 'Generation update error');
  // every vdkit code with a VDDK name has the same number on both sides, and numbers are unique
  for (const code of Object.keys(ERROR_TABLE) as (keyof typeof ERROR_TABLE)[]) {
    const name = V.vixNameOf(code);
    assert.ok(name in V.VIX_ERRORS, `${code} -> ${name}`);
    if (name === `VIX_E_DISK_${code}`) assert.equal(V.VIX_ERRORS[name]!.number, ERROR_TABLE[code].number, code);
  }
  assert.equal(V.vixNameOf('CORRUPT'), 'VIX_E_DISK_NEEDSREPAIR');
  assert.equal(V.vixNameOf('CLOSED'), 'VIX_E_DISK_NOIO');
  const seen = new Map<number, string>();
  for (const [name, row] of Object.entries(V.VIX_ERRORS)) {
    if (row.number === undefined || row.number === 0) continue;
    assert.ok(!seen.has(row.number), `${name} and ${seen.get(row.number)} share ${row.number}`);
    seen.set(row.number, name);
  }
  // Init first; Exit ends it; a connection dies with Disconnect; remote connections are refused
  V.VixDiskLib_Exit();
  await rejectsVix(V.VixDiskLib_Connect(null), 'VIX_E_DISK_NOINIT', 'Connect before Init');
  await rejectsVix(V.VixDiskLib_Init(2, 0), 'VIX_E_DISK_INVAL', 'Init of an unknown major version');
  assert.equal(await V.VixDiskLib_Init(1, 0, null, null, null, null), V.VIX_OK);
  // a server name: its disks are NBD exports (vixdisklib-nbd.test.ts); nothing is sent until Open
  const remote = await V.VixDiskLib_Connect({ serverName: 'esx3', credType: V.VIXDISKLIB_CRED_UID, creds: { uid: { userName: 'root', password: 'x' } } });
  assert.deepEqual(remote, { local: false, vmxSpec: null, serverName: 'esx3' });
  await V.VixDiskLib_Disconnect(remote);
  const cnx = await V.VixDiskLib_Connect(null);
  assert.equal(V.VixDiskLib_ListTransportModes(), 'file:nbd:nbdssl');
  assert.deepEqual(await V.VixDiskLib_GetConnectParams(cnx), {});
  await V.VixDiskLib_Disconnect(cnx);
  const dir = (await tmpDir(t, 'vdkit-vix-err-')).path;
  await rejectsVix(V.VixDiskLib_Create(cnx, join(dir, 'a.vmdk'), params(2048)), 'VIX_E_DISK_INVALID_CONNECTION', 'Create on a disconnected connection');
  V.VixDiskLib_Exit();
  await rejectsVix(V.VixDiskLib_Cleanup(null), 'VIX_E_DISK_NOINIT', 'after Exit');
});

test('VixDiskLib: Create of every hosted and VMFS type, adapters, capacity in sectors (qemu-img info)', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t, 'vdkit-vix-create-')).path;
  await session(async (cnx) => {
    const cases: [number, string, number][] = [
      [V.VIXDISKLIB_DISK_MONOLITHIC_SPARSE, 'monolithicSparse', V.VIXDISKLIB_ADAPTER_IDE],
      [V.VIXDISKLIB_DISK_MONOLITHIC_FLAT, 'monolithicFlat', V.VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC],
      [V.VIXDISKLIB_DISK_SPLIT_SPARSE, 'twoGbMaxExtentSparse', V.VIXDISKLIB_ADAPTER_SCSI_LSILOGIC],
      [V.VIXDISKLIB_DISK_SPLIT_FLAT, 'twoGbMaxExtentFlat', V.VIXDISKLIB_ADAPTER_IDE],
      [V.VIXDISKLIB_DISK_VMFS_FLAT, 'vmfs', V.VIXDISKLIB_ADAPTER_SCSI_LSILOGIC],
      [V.VIXDISKLIB_VMFS_THIN, 'vmfs', V.VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC],
    ];
    for (const [i, [diskType, createType, adapter]] of cases.entries()) {
      const path = join(dir, `d${i}.vmdk`);
      const sectors = 20480 + i * 128;
      assert.equal(await V.VixDiskLib_Create(cnx, path, params(sectors, diskType, adapter)), V.VIX_OK);
      const qi = await qinfo(path);
      assert.equal(qi['virtual-size'], sectors * S, `${createType}: capacity is in sectors`);
      assert.equal(qi['format-specific'].data['create-type'], createType);
      const h = await V.VixDiskLib_Open(cnx, path, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
      const info = await V.VixDiskLib_GetInfo(h);
      assert.equal(info.capacity, sectors);
      assert.equal(info.adapterType, adapter);
      assert.equal(info.numLinks, 1);
      assert.equal(info.parentFileNameHint, null);
      assert.match(info.uuid ?? '', /^60 00 C2 /);
      assert.equal(await V.VixDiskLib_ReadMetadata(h, 'virtualHWVersion'), '4');
      const descriptor = await descriptorText(path);
      assert.equal(/ddb\.thinProvisioned = "1"/.test(descriptor), diskType === V.VIXDISKLIB_VMFS_THIN, `${createType}: thin flag`);
      await V.VixDiskLib_Close(h);
    }
    await rejectsVix(V.VixDiskLib_Create(cnx, join(dir, 'd0.vmdk'), params(2048)), 'VIX_E_DISK_FILEEXISTS', 'Create over an existing disk');
    await rejectsVix(V.VixDiskLib_Create(cnx, join(dir, 'x.vmdk'), params(2048, 99)), 'VIX_E_DISK_INVAL', 'unknown disk type');
    await rejectsVix(V.VixDiskLib_Create(cnx, join(dir, 'x.vmdk'), params(2048, V.VIXDISKLIB_DISK_MONOLITHIC_SPARSE, 9)), 'VIX_E_DISK_INVAL', 'unknown adapter');
    await rejectsVix(V.VixDiskLib_Create(cnx, join(dir, 'x.vmdk'), params(2048.5)), 'VIX_E_DISK_INVAL', 'fractional capacity');
    await rejectsVix(V.VixDiskLib_Create(cnx, join(dir, 'x.vmdk'), params(2048, V.VIXDISKLIB_DISK_VMFS_SPARSE)), 'VIX_E_DISK_NOTSUPPORTED', 'VMFS sparse');
    assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('x')), [], 'failed creates leave nothing');
  });
});

test('VixDiskLib: Read/Write in sectors, open flags, chains (qemu-io as the oracle)', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-vix-io-')).path;
  const base = join(dir, 'base.vmdk');
  await qemu(['create', '-f', 'vmdk', base, '4M']);
  await qemuIo(base, 'write -P 0x5a 0 64k');
  await session(async (cnx) => {
    const h = await V.VixDiskLib_Open(cnx, base, V.VIXDISKLIB_FLAG_OPEN_UNBUFFERED);
    const buf = new Uint8Array(4 * S);
    await V.VixDiskLib_Read(h, 126, 4, buf);
    assert.ok(buf.subarray(0, 2 * S).every((b) => b === 0x5a) && buf.subarray(2 * S).every((b) => b === 0), 'sectors 126-127 from qemu, 128-129 unwritten');
    const data = Buffer.alloc(3 * S, 0xc3);
    await V.VixDiskLib_Write(h, 7, 3, data);
    await V.VixDiskLib_Write(h, 8191, 1, Buffer.alloc(S, 0x11)); // the last sector
    await rejectsVix(V.VixDiskLib_Write(h, 8191, 2, Buffer.alloc(2 * S)), 'VIX_E_DISK_OUTOFRANGE', 'write past the end');
    await rejectsVix(V.VixDiskLib_Read(h, 8192, 1, buf), 'VIX_E_DISK_OUTOFRANGE', 'read past the end');
    await rejectsVix(V.VixDiskLib_Read(h, 0, 5, buf), 'VIX_E_BUFFER_TOOSMALL', 'buffer of 4 sectors for 5');
    await rejectsVix(V.VixDiskLib_Read(h, -1, 1, buf), 'VIX_E_DISK_INVAL', 'negative sector');
    await rejectsVix(V.VixDiskLib_Read(h, 1.5, 1, buf), 'VIX_E_DISK_INVAL', 'fractional sector');
    await V.VixDiskLib_Flush(h);
    assert.equal(V.VixDiskLib_GetTransportMode(h), 'file');
    await V.VixDiskLib_Close(h);
    await rejectsVix(V.VixDiskLib_Read(h, 0, 1, buf), 'VIX_E_DISK_NOIO', 'read after Close');
    await qemuIo(base, `read -P 0xc3 ${7 * S} ${3 * S}`);
    await qemuIo(base, `read -P 0x5a 0 ${7 * S}`);
    await qemuIo(base, `read -P 0x5a ${10 * S} ${118 * S}`);
    await qemuIo(base, `read -P 0x11 ${8191 * S} ${S}`);
    await qemu(['check', base]);

    // READ_ONLY refuses writes; unknown flags refused
    const ro = await V.VixDiskLib_Open(cnx, base, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
    await rejectsVix(V.VixDiskLib_Write(ro, 0, 1, Buffer.alloc(S)), 'VIX_E_DISK_RDONLY', 'write on a read-only handle');
    await rejectsVix(V.VixDiskLib_WriteMetadata(ro, 'toolsVersion', '3'), 'VIX_E_DISK_RDONLY', 'metadata write on a read-only handle');
    await V.VixDiskLib_Close(ro);
    await rejectsVix(V.VixDiskLib_Open(cnx, base, 1 << 5), 'VIX_E_DISK_INVAL', 'unknown open flag');

    // CreateChild: the child reads through, SINGLE_LINK sees the child alone, the parent is now read-only
    const parent = await V.VixDiskLib_Open(cnx, base, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
    const child = join(dir, 'base-000001.vmdk');
    await rejectsVix(V.VixDiskLib_CreateChild(parent, child, V.VIXDISKLIB_DISK_MONOLITHIC_FLAT), 'VIX_E_DISK_INVAL', 'a flat child');
    await V.VixDiskLib_CreateChild(parent, child, V.VIXDISKLIB_DISK_SPLIT_SPARSE);
    await V.VixDiskLib_Close(parent);
    assert.equal((await qinfo(child))['backing-filename'], 'base.vmdk');
    assert.equal((await qinfo(child))['format-specific'].data['create-type'], 'twoGbMaxExtentSparse');
    await rejectsVix(V.VixDiskLib_Open(cnx, base, 0), 'VIX_E_DISK_RDONLY', 'opening a parent read-write');
    const c = await V.VixDiskLib_Open(cnx, child, 0);
    const ci = await V.VixDiskLib_GetInfo(c);
    assert.equal(ci.numLinks, 2);
    assert.equal(ci.parentFileNameHint, 'base.vmdk');
    await V.VixDiskLib_Write(c, 4096, 1, Buffer.alloc(S, 0x77));
    await V.VixDiskLib_Read(c, 7, 1, buf);
    assert.equal(buf[0], 0xc3, 'the chain reads the parent');
    await V.VixDiskLib_Close(c);
    const single = await V.VixDiskLib_Open(cnx, child, V.VIXDISKLIB_FLAG_OPEN_SINGLE_LINK | V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
    await V.VixDiskLib_Read(single, 7, 1, buf);
    assert.ok(buf.subarray(0, S).every((b) => b === 0), 'SINGLE_LINK: the child alone has zeros there');
    assert.equal((await V.VixDiskLib_GetInfo(single)).numLinks, 1);
    await V.VixDiskLib_Close(single);
    await qemuIo(child, `read -P 0x77 ${4096 * S} ${S}`);
    await qemuIo(child, `read -P 0xc3 ${7 * S} ${S}`);
  });
});

test('VixDiskLib: metadata keys and values match the descriptor', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-vix-meta-')).path;
  const path = join(dir, 'm.vmdk');
  await session(async (cnx) => {
    await V.VixDiskLib_Create(cnx, path, params(204800, V.VIXDISKLIB_DISK_MONOLITHIC_SPARSE, V.VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC));
    const h = await V.VixDiskLib_Open(cnx, path, 0);
    await V.VixDiskLib_WriteMetadata(h, 'toolsVersion', '2');
    await V.VixDiskLib_WriteMetadata(h, 'vdkit.note', 'hello world');
    const keys = await V.VixDiskLib_GetMetadataKeys(h);
    await V.VixDiskLib_Close(h);
    const descriptor = await descriptorText(path);
    const ddb = new Map([...descriptor.matchAll(/^ddb\.([\w.]+) = "([^"]*)"/gm)].map((m) => [m[1]!, m[2]!]));
    assert.deepEqual(new Set(keys), new Set(ddb.keys()));
    assert.equal(ddb.get('toolsVersion'), '2');
    assert.equal(ddb.get('vdkit.note'), 'hello world');
    assert.equal(ddb.get('geometry.cylinders'), '100');
    const again = await V.VixDiskLib_Open(cnx, path, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
    for (const k of keys) assert.equal(await V.VixDiskLib_ReadMetadata(again, k), ddb.get(k), k);
    await rejectsVix(V.VixDiskLib_ReadMetadata(again, 'absent'), 'VIX_E_DISK_KEY_NOTFOUND', 'missing key');
    await V.VixDiskLib_Close(again);
  });
});

test('VixDiskLib: QueryAllocatedBlocks matches qemu-img map, in chunks of the requested size', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-vix-qab-')).path;
  const path = join(dir, 'q.vmdk');
  const SIZE = 64 * 1024 * 1024;
  await qemu(['create', '-f', 'vmdk', path, String(SIZE)]);
  const rng = new Rng(seedOf('QueryAllocatedBlocks'));
  for (let i = 0; i < 12; i++) {
    const at = rng.int(0, SIZE / S - 300) * S;
    await qemuIo(path, `write -P ${rng.int(1, 255)} ${at} ${rng.int(1, 256) * S}`);
  }
  await qemuIo(path, `write -P 9 ${SIZE - S} ${S}`); // the last sector
  const map = await qemuMap(path);
  await session(async (cnx) => {
    const h = await V.VixDiskLib_Open(cnx, path, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
    for (const chunk of [V.VIXDISKLIB_MIN_CHUNK_SIZE, 2048, 8192]) {
      // expected: every chunk any qemu data range touches, merged
      const want: V.VixDiskLibBlock[] = [];
      for (const e of map) {
        if (!e.data) continue;
        const first = Math.floor(e.start / S / chunk) * chunk;
        const end = Math.ceil((e.start + e.length) / S / chunk) * chunk;
        const last = want[want.length - 1];
        if (last && first <= last.offset + last.length) last.length = Math.max(last.length, end - last.offset);
        else want.push({ offset: first, length: end - first });
      }
      const got = await V.VixDiskLib_QueryAllocatedBlocks(h, 0, SIZE / S, chunk);
      assert.deepEqual(got, want, `chunk ${chunk}`);
      // the same asked in two halves, VDDK-style loop
      const half = SIZE / S / 2;
      const parts = [...(await V.VixDiskLib_QueryAllocatedBlocks(h, 0, half, chunk)), ...(await V.VixDiskLib_QueryAllocatedBlocks(h, half, half, chunk))];
      const merged: V.VixDiskLibBlock[] = [];
      for (const b of parts) {
        const last = merged[merged.length - 1];
        if (last && last.offset + last.length === b.offset) last.length += b.length;
        else merged.push({ ...b });
      }
      assert.deepEqual(merged, want, `chunk ${chunk} in two calls`);
    }
    await rejectsVix(V.VixDiskLib_QueryAllocatedBlocks(h, 0, 1024, 100), 'VIX_E_DISK_INVAL', 'chunk not a power of two');
    await rejectsVix(V.VixDiskLib_QueryAllocatedBlocks(h, 0, 1024, 64), 'VIX_E_DISK_INVAL', 'chunk below the minimum');
    await rejectsVix(V.VixDiskLib_QueryAllocatedBlocks(h, 64, 1024, 128), 'VIX_E_DISK_INVAL', 'start not on a chunk');
    await rejectsVix(V.VixDiskLib_QueryAllocatedBlocks(h, 0, SIZE / S + 128, 128), 'VIX_E_DISK_OUTOFRANGE', 'past the end');
    await V.VixDiskLib_Close(h);
  });
});

test('VixDiskLib: Clone (types, progress, cancel, overwrite), SpaceNeededForClone bounds the clone', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-vix-clone-')).path;
  const src = join(dir, 'src.vmdk');
  const SIZE = 48 * 1024 * 1024;
  await qemu(['create', '-f', 'vmdk', src, String(SIZE)]);
  for (let i = 0; i < 8; i++) await qemuIo(src, `write -P ${i + 1} ${i * 6 * 1024 * 1024} 1M`);
  await session(async (cnx) => {
    const h = await V.VixDiskLib_Open(cnx, src, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
    const needSparse = await V.VixDiskLib_SpaceNeededForClone(h, V.VIXDISKLIB_DISK_MONOLITHIC_SPARSE);
    const needFlat = await V.VixDiskLib_SpaceNeededForClone(h, V.VIXDISKLIB_DISK_MONOLITHIC_FLAT);
    const needSame = await V.VixDiskLib_SpaceNeededForClone(h, V.VIXDISKLIB_DISK_UNKNOWN);
    await V.VixDiskLib_Close(h);
    assert.ok(needFlat >= SIZE, `a flat clone needs the whole capacity (${needFlat})`);
    assert.equal(needSame, needSparse, 'UNKNOWN: the source type (monolithicSparse)');
    assert.ok(needSparse >= 8 * 1024 * 1024 && needSparse < 12 * 1024 * 1024, `a sparse clone needs the 8 MiB of data and its tables (${needSparse})`);

    const percents: number[] = [];
    const token = { tag: 'progressData' };
    const dst = join(dir, 'clone.vmdk');
    await V.VixDiskLib_Clone(cnx, dst, cnx, src, params(0, V.VIXDISKLIB_DISK_MONOLITHIC_SPARSE, V.VIXDISKLIB_ADAPTER_IDE), (data, p) => {
      assert.equal(data, token, 'the progress function gets progressCallbackData');
      percents.push(p);
      return true;
    }, token, false);
    // the convert under Clone thins its reports (every 100 ms and 1 %): a fast clone says 0 and 100
    assert.ok(percents.length >= 2, `progress reported: ${percents.join(',')}`);
    assert.deepEqual(percents, [...percents].sort((a, b) => a - b));
    assert.equal(percents[0], 0);
    assert.equal(percents[percents.length - 1], 100);
    assert.match(await qemu(['compare', src, dst]), /Images are identical/);
    await qemu(['check', dst]);
    const qi = await qinfo(dst);
    assert.equal(qi['format-specific'].data['create-type'], 'monolithicSparse');
    assert.ok((await stat(dst)).size <= needSparse, `SpaceNeededForClone (${needSparse}) covers the clone (${(await stat(dst)).size})`);
    assert.match(await descriptorText(dst), /ddb\.adapterType = "ide"/);

    await rejectsVix(V.VixDiskLib_Clone(cnx, dst, cnx, src, params(0), null, null, false), 'VIX_E_DISK_FILEEXISTS', 'clone over an existing disk without overWrite');
    const stream = join(dir, 'stream.vmdk');
    await V.VixDiskLib_Clone(cnx, stream, cnx, src, params(0, V.VIXDISKLIB_DISK_STREAM_OPTIMIZED), null, null, false);
    assert.equal((await qinfo(stream))['format-specific'].data['create-type'], 'streamOptimized');
    assert.match(await qemu(['compare', src, stream]), /Images are identical/);

    // a progress function returning false cancels; nothing is left at the destination
    const cancelled = join(dir, 'cancelled.vmdk');
    await rejectsVix(V.VixDiskLib_Clone(cnx, cancelled, cnx, src, params(0), (_d, p) => p < 20, null, false), 'VIX_E_DISK_CANCELLED', 'cancelled clone');
    assert.deepEqual((await readdir(dir)).filter((n) => n.includes('cancelled')), []);
    await rejectsVix(V.VixDiskLib_Clone(cnx, join(dir, 'small.vmdk'), cnx, src, params(SIZE / S - 1), null, null, false), 'VIX_E_DISK_INVAL', 'clone smaller than the source');
  });
});

test('VixDiskLib: Grow (geometry kept or updated), Rename, Unlink, CheckRepair (qemu-img)', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-vix-admin-')).path;
  const a = join(dir, 'a.vmdk');
  await session(async (cnx) => {
    await V.VixDiskLib_Create(cnx, a, params(20480, V.VIXDISKLIB_DISK_MONOLITHIC_SPARSE, V.VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC));
    await qemuIo(a, 'write -P 0x42 1M 64k');
    const report = await V.VixDiskLib_CheckRepair(cnx, a, false);
    assert.deepEqual(report.findings, [], 'a clean disk has no findings');
    assert.equal(report.format, 'vmdk');
    const geo = async (p: string) => (await descriptorText(p)).match(/ddb\.geometry\.cylinders = "(\d+)"/)![1];
    assert.equal(await geo(a), '10');
    const seen: number[] = [];
    await V.VixDiskLib_Grow(cnx, a, 40960, false, (_d, p) => void seen.push(p), null);
    assert.equal((await qinfo(a))['virtual-size'], 40960 * S);
    assert.equal(await geo(a), '10', 'updateGeometry FALSE keeps the geometry');
    assert.deepEqual(seen, [0, 100]);
    await V.VixDiskLib_Grow(cnx, a, 81920, true);
    assert.equal((await qinfo(a))['virtual-size'], 81920 * S);
    assert.equal(await geo(a), '40', 'updateGeometry TRUE: 81920 / (64 * 32)');
    await qemuIo(a, 'read -P 0x42 1M 64k');
    await qemu(['check', a]);
    await rejectsVix(V.VixDiskLib_Grow(cnx, a, 2048, true), 'VIX_E_DISK_INVAL', 'Grow to a smaller size');

    // CheckRepair resolves whatever it finds ("the success of the call, not the consistency")
    const after = await V.VixDiskLib_CheckRepair(cnx, a, false);
    assert.deepEqual(after.findings.filter((f) => f.kind === 'corruption'), [], 'no corruption after Grow');
    await rejectsVix(V.VixDiskLib_CheckRepair(cnx, join(dir, 'none.vmdk'), false), 'VIX_E_DISK_FILENOTFOUND', 'check of a missing disk');

    const b = join(dir, 'b.vmdk');
    assert.equal(await V.VixDiskLib_Rename(a, b), V.VIX_OK);
    assert.deepEqual(await readdir(dir), ['b.vmdk']);
    await qemuIo(b, 'read -P 0x42 1M 64k');
    // Unlink removes a parent even with a child (VDDK: the child is orphaned)
    const h = await V.VixDiskLib_Open(cnx, b, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
    await V.VixDiskLib_CreateChild(h, join(dir, 'c.vmdk'), V.VIXDISKLIB_DISK_MONOLITHIC_SPARSE);
    await V.VixDiskLib_Close(h);
    assert.equal(await V.VixDiskLib_Unlink(cnx, b), V.VIX_OK);
    assert.deepEqual(await readdir(dir), ['c.vmdk']);
    await rejectsVix(V.VixDiskLib_Open(cnx, join(dir, 'c.vmdk'), V.VIXDISKLIB_FLAG_OPEN_READ_ONLY), 'VIX_E_DISK_OPENPARENT', 'an orphaned child');
  });
});

test('VixDiskLib: Attach a fresh disk to a parent (the guide\'s recipe), checked with qemu-img', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-vix-attach-')).path;
  const parent = join(dir, 'p.vmdk');
  const child = join(dir, 'c.vmdk');
  await session(async (cnx) => {
    await V.VixDiskLib_Create(cnx, parent, params(8192));
    await qemuIo(parent, 'write -P 0x61 0 128k');
    await V.VixDiskLib_Create(cnx, child, params(8192));
    const ph = await V.VixDiskLib_Open(cnx, parent, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
    const ch = await V.VixDiskLib_Open(cnx, child, 0);
    const wrong = join(dir, 'w.vmdk');
    await V.VixDiskLib_Create(cnx, wrong, params(4096));
    const wh = await V.VixDiskLib_Open(cnx, wrong, 0);
    await rejectsVix(V.VixDiskLib_IsAttachPossible(ph, wh), 'VIX_E_DISK_CAPACITY_MISMATCH', 'attach of a different size');
    await V.VixDiskLib_Close(wh);
    assert.equal(await V.VixDiskLib_IsAttachPossible(ph, ch), V.VIX_OK);
    assert.equal(await V.VixDiskLib_Attach(ph, ch), V.VIX_OK);
    const buf = Buffer.alloc(S);
    await rejectsVix(V.VixDiskLib_Read(ph, 0, 1, buf), 'VIX_E_DISK_NOIO', 'the parent handle is invalid after Attach');
    await V.VixDiskLib_Read(ch, 3, 1, buf);
    assert.ok(buf.every((b) => b === 0x61), 'the child handle reads the combined chain');
    assert.equal((await V.VixDiskLib_GetInfo(ch)).numLinks, 2);
    await V.VixDiskLib_Write(ch, 1, 1, Buffer.alloc(S, 0x62));
    await V.VixDiskLib_Close(ch);
  });
  const qi = await qinfo(child);
  assert.equal(qi['backing-filename'], 'p.vmdk');
  await qemuIo(child, `read -P 0x62 ${S} ${S}`);
  await qemuIo(child, `read -P 0x61 0 ${S}`);
  await qemuIo(child, `read -P 0x61 ${2 * S} ${126 * S}`);
  await qemuIo(parent, `read -P 0x61 ${S} ${S}`);
});
