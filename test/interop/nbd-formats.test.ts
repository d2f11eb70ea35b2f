/**
 * `vdkit serve` as the peers see it, for every format and a 3-link cross-format chain
 * (base.vmdk <- mid.qcow2 <- top.qcow2): nbdinfo (list, map, allocation depth, content),
 * qemu-img (info, compare, map, convert over nbd:// and nbd+unix://), nbdcopy both ways with 4
 * connections, nbdkit's nbd plugin as a proxy, nbdfuse + a byte comparison, then qemu-io writes
 * (plain, zero, discard, flush) after which qemu-img check is clean and the image equals a raw
 * model that got the same writes. Images are 8 MiB and made by qemu-img, the oracle.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Disk } from '../../src/index.js';
import { inCI, skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, SIZE, PLAN_DATA, background, makeFixture, merge, nbdinfoMap, ok, qemuDataRanges, startServer, tcpUri, unixUri, type Fixture, type Range } from './nbd-support.js';

const KINDS = ['vmdk', 'streamOptimized', 'vdi', 'vpc', 'vhdx', 'qcow2', 'raw', 'chain'];
const TOOLS = ['qemu-img', 'qemu-io', 'nbdinfo', 'nbdcopy', 'nbdkit', 'nbdfuse', 'fusermount3'];

/** 64 KiB blocks of a raw file that hold a non-zero byte */
async function nonZeroRanges(path: string): Promise<Range[]> {
  const b = await readFile(path);
  const out: Range[] = [];
  for (let o = 0; o < b.length; o += 65536) if (b.subarray(o, o + 65536).some((x) => x !== 0)) out.push([o, 65536]);
  return merge(out);
}

async function sameBytes(a: string, b: string, what: string): Promise<void> {
  const [x, y] = await Promise.all([readFile(a), readFile(b)]);
  assert.equal(x.length, y.length, `${what}: size`);
  assert.ok(x.equals(y), `${what}: content differs`);
}

/**
 * qemu 7.2 is the oracle for allocation where its driver reports it: it maps every VHDX range as
 * data and calls unallocated VDI blocks "present", so for those (and raw, whose data ranges are
 * what the plan wrote) the expectation is vdkit's own block status of the file, checked to cover
 * every byte the plan wrote.
 */
const QEMU_KNOWS_ALLOCATION = new Set(['vmdk', 'vpc', 'qcow2']);

async function ownStatus(path: string): Promise<{ data: Range[]; depth: [number, number, number][] }> {
  const d = await Disk.open(path, { readOnly: true });
  try {
    const ext = await d.blockStatus();
    return { data: merge(ext.filter((e) => e.state === 'data').map((e) => [e.offset, e.length])), depth: ext.map((e) => [e.offset, e.length, e.state === 'unallocated' ? 0 : (e.depth ?? 0) + 1]) };
  } finally {
    await d.close();
  }
}

async function readChecks(fx: Fixture, dir: string, U: string, T: string, sock: string): Promise<void> {
  const qemuMap = JSON.parse((await ok('qemu-img', ['map', '-f', fx.qemuFormat, '--output=json', fx.path])).stdout) as { start: number; length: number; depth: number; present?: boolean }[];
  const oracle = QEMU_KNOWS_ALLOCATION.has(fx.qemuFormat) || fx.links !== undefined;
  const own = await ownStatus(fx.path);
  const expectedData = oracle ? await qemuDataRanges(fx.path, fx.qemuFormat) : fx.qemuFormat === 'raw' ? merge(PLAN_DATA) : own.data;
  if (!oracle) for (const [o, l] of PLAN_DATA) assert.ok(expectedData.some(([a, n]) => a <= o && o + l <= a + n), `data ranges cover the plan's write at ${o}`);
  const depthRuns = (list: [number, number, number][]) => {
    const out: [number, number, number][] = [];
    for (const [o, l, d] of list) {
      const last = out[out.length - 1];
      if (last && last[2] === d && last[0] + last[1] === o) last[1] += l;
      else out.push([o, l, d]);
    }
    return out;
  };
  const mnt = join(dir, 'mnt');
  await mkdir(mnt);
  await Promise.all([
    (async () => {
      const list = JSON.parse((await ok('nbdinfo', ['--list', '--json', U])).stdout) as { exports: { 'export-name': string; description?: string; 'export-size': number; is_read_only: boolean }[] };
      assert.deepEqual(list.exports.map((e) => [e['export-name'], e.description, e['export-size'], e.is_read_only]), [['disk', `vdkit ${fx.name}`, SIZE, true]]);
    })(),
    (async () => {
      const map = await nbdinfoMap(U);
      assert.deepEqual(merge(map.filter((e) => e[2] === 0).map(([o, l]) => [o, l])), expectedData, 'nbdinfo --map data ranges = qemu-img map of the file');
      assert.equal(map.reduce((s, e) => s + e[1], 0), SIZE);
    })(),
    (async () => {
      const depth = depthRuns(await nbdinfoMap(U, 'qemu:allocation-depth'));
      const qemu = depthRuns(oracle ? qemuMap.map((e) => [e.start, e.length, e.present !== false ? e.depth + 1 : 0]) : own.depth);
      assert.deepEqual(depth, qemu, 'qemu:allocation-depth = qemu-img map depth (+1; 0 = absent)');
      if (fx.links) assert.deepEqual([...new Set(depth.map((d) => d[2]))].sort(), [0, 1, 2, 3], 'every link of the chain shows');
    })(),
    (async () => {
      const r = await ok('nbdinfo', ['--content', T]);
      assert.match(r.stdout, /content: /);
    })(),
    (async () => {
      const info = JSON.parse((await ok('qemu-img', ['info', '--output=json', T])).stdout) as { 'virtual-size': number };
      assert.equal(info['virtual-size'], SIZE);
    })(),
    ok('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', fx.model, U]),
    ok('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', fx.model, T]),
    (async () => {
      const r = await ok('qemu-img', ['map', '--output=json', '-f', 'raw', U]);
      const data = merge((JSON.parse(r.stdout) as { start: number; length: number; data: boolean }[]).filter((e) => e.data).map((e) => [e.start, e.length]));
      assert.deepEqual(data, expectedData, 'qemu-img map over nbd');
    })(),
    (async () => {
      const out = join(dir, 'conv.qcow2');
      await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', T, out]);
      await ok('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', out, fx.model]);
    })(),
    (async () => {
      const out = join(dir, 'copy.raw');
      await ok('nbdcopy', ['--connections=4', U, out]);
      await sameBytes(out, fx.model, 'nbdcopy download');
      const used = (await stat(out)).blocks * 512;
      const data = expectedData.reduce((s, r) => s + r[1], 0);
      assert.ok(used <= data + 256 * 1024, `nbdcopy download stays sparse: ${used} bytes used for ${data} of data`);
    })(),
    ok('nbdkit', ['-U', '-', 'nbd', `socket=${sock}`, 'export=disk', '--run', `qemu-img compare -f raw -F raw ${fx.model} "$uri"`]),
    (async () => {
      if (!existsSync('/dev/fuse')) {
        assert.ok(!inCI(), 'nbdfuse needs /dev/fuse, and CI is set');
        return void console.log('# nbdfuse part skipped: no /dev/fuse on this machine');
      }
      const fuse = background(undefined as never, 'nbdfuse', ['-r', join(mnt, 'disk'), U]);
      try {
        for (let i = 0; i < 100 && !existsSync(join(mnt, 'disk')); i++) await new Promise((r) => setTimeout(r, 50));
        await sameBytes(join(mnt, 'disk'), fx.model, 'nbdfuse file');
      } finally {
        await ok('fusermount3', ['-u', mnt]);
        if (fuse.exitCode === null) await new Promise((r) => fuse.once('exit', r));
      }
    })(),
  ]);
}

const WRITES = ['write -P 0x71 2M 64k', 'write -P 0x72 100k 8k', 'write -z 1M 64k', 'discard 5M 64k', 'discard 6M 128k', 'write -P 0x73 7M 4k', 'flush'];

for (const kind of KINDS) {
  test(`nbd interop: ${kind}`, async (t) => {
    if (!skipUnless(t, ...TOOLS)) return;
    const dir = (await tmpDir(t, 'vdkit-nbd-')).path;
    const fx = await makeFixture(dir, kind);
    const image = { path: fx.path, name: 'disk', description: `vdkit ${fx.name}` };
    const sock = join(dir, 'ro.sock');
    const ro = await startServer(t, { images: [image], listen: { socket: sock }, readOnly: true });
    const roTcp = await startServer(t, { images: [image], listen: { host: '127.0.0.1', port: 0 }, readOnly: true });
    await readChecks(fx, dir, unixUri(ro, 'disk'), tcpUri(roTcp, 'disk'), sock);
    await Promise.all([ro.close(), roTcp.close()]);
    if (!fx.writable) return;

    // writes through qemu-io, mirrored on the raw model
    const rw = await startServer(t, { images: [{ path: fx.path }], listen: { socket: join(dir, 'rw.sock') } });
    await ok('qemu-io', ['-f', 'raw', ...WRITES.flatMap((c) => ['-c', c]), unixUri(rw)]);
    await ok('qemu-io', ['-f', 'raw', ...WRITES.flatMap((c) => ['-c', c]), fx.model]);
    // an upload into a fresh image of the same format, 4 connections
    const up = join(dir, `up.${fx.qemuFormat === 'vpc' ? 'vhd' : fx.qemuFormat}`);
    await ok('qemu-img', ['create', '-q', '-f', fx.qemuFormat, ...(fx.qemuFormat === 'vpc' ? ['-o', 'force_size=on'] : []), up, String(SIZE)]);
    const upServer = await startServer(t, { images: [{ path: up }], listen: { socket: join(dir, 'up.sock') } });
    await ok('nbdcopy', ['--connections=4', '--flush', fx.model, unixUri(upServer)]);
    await Promise.all([rw.close(), upServer.close()]);

    await ok('qemu-img', ['compare', '-f', fx.qemuFormat, '-F', 'raw', fx.path, fx.model]);
    await ok('qemu-img', ['compare', '-f', fx.qemuFormat, '-F', 'raw', up, fx.model]);
    if (fx.checkable) {
      await ok('qemu-img', ['check', '-f', fx.qemuFormat, fx.path]);
      await ok('qemu-img', ['check', '-f', fx.qemuFormat, up]);
    }
    // sparse stays sparse: no allocation covers only zeros of the source
    const nonZero = await nonZeroRanges(fx.model);
    const upData = fx.qemuFormat === 'raw' ? [] : await qemuDataRanges(up, fx.qemuFormat);
    for (const [o, l] of upData) assert.ok(nonZero.some(([a, n]) => a < o + l && o < a + n), `upload allocated ${o}+${l}, which is all zeros in the source`);
    if (fx.qemuFormat === 'raw') assert.ok((await stat(up)).blocks * 512 < SIZE / 2, 'raw upload stays sparse');
    assert.ok(SIZE > 4 * MiB);
  });
}
