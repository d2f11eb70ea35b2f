/**
 * A VHDX whose BAT region is too small for a new size (or for the sector bitmap entries a
 * differencing image needs) gets a larger BAT region at the end of the file, switched by one log
 * entry that rewrites both region tables (src/formats/vhdx/NOTES.md "Resize").
 *
 * With 1 MiB blocks, QEMU's 1 MiB BAT region holds 131072 entries: about 127.97 GiB of disk.
 * - qemu-img's image grown from 40 MiB to 200 GiB: qemu-img info reports the size, check is
 *   clean, compare finds the old content; both region tables name the new region; qemu-io
 *   writes past 128 GiB and vdkit reads it back; compact and defragment afterwards keep it all.
 * - a dynamic image of 131040 MiB (fits as dynamic, not as differencing) made a child of another.
 * - the grow killed at random moments (20 runs): the old or the new disk, never corruption.
 */
import assert from 'node:assert/strict';
import { open, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Disk, checkDisk, compact, defragment, openFindings, resize } from '../../src/index.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';
import { runKilledWhen } from '../helpers/spawn-lines.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const WORKER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/admin-kill-worker.js');
const BAT_GUID = '2dc27766-f623-4200-9d64-115e9bfd4a08';

async function ok(tool: string, args: string[]): Promise<string> {
  const r = await run(tool, args);
  assert.equal(r.code, 0, describeRun(tool, args, r));
  return r.stdout;
}

function guidAt(b: Buffer, at: number): string {
  const h = (s: number, n: number, le: boolean) => {
    const part = Buffer.from(b.subarray(at + s, at + s + n));
    return (le ? part.reverse() : part).toString('hex');
  };
  return `${h(0, 4, true)}-${h(4, 2, true)}-${h(6, 2, true)}-${h(8, 2, false)}-${h(10, 6, false)}`;
}

/** the BAT region of each region table copy, read with plain fs */
async function batRegions(path: string): Promise<{ offset: number; length: number }[]> {
  const fh = await open(path, 'r');
  try {
    const out = [];
    for (const copy of [192 * 1024, 256 * 1024]) {
      const b = Buffer.alloc(4096);
      await fh.read(b, 0, b.length, copy);
      assert.equal(b.toString('latin1', 0, 4), 'regi');
      const n = b.readUInt32LE(8);
      for (let i = 0; i < n; i++) {
        const e = 16 + i * 32;
        if (guidAt(b, e) === BAT_GUID) out.push({ offset: Number(b.readBigUInt64LE(e + 16)), length: b.readUInt32LE(e + 24) });
      }
    }
    return out;
  } finally {
    await fh.close();
  }
}

async function clean(path: string, what: string): Promise<void> {
  const report = await checkDisk(path, { repair: false, chain: false });
  assert.equal(openFindings(report).corruptions, 0, `${what}: ${JSON.stringify(report.findings)}`);
}

test('VHDX grow past its BAT region moves the BAT; qemu-img, vhdiinfo and a compact agree', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io', 'vhdiinfo')) return;
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'd.vhdx');
  await ok('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', p, '40M']);
  await ok('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 0x11 39M 1M', p]);
  const [before] = await batRegions(p);
  const r = await resize(p, 200 * GiB);
  assert.equal(r.newCapacity, 200 * GiB);
  const info = JSON.parse(await ok('qemu-img', ['info', '--output=json', p])) as { 'virtual-size': number };
  assert.equal(info['virtual-size'], 200 * GiB);
  await ok('qemu-img', ['check', '-q', '-f', 'vhdx', p]);
  await clean(p, 'after the grow');
  const regions = await batRegions(p);
  assert.equal(regions.length, 2);
  assert.deepEqual(regions[0], regions[1], 'both region tables name the same BAT');
  assert.notEqual(regions[0]!.offset, before!.offset, 'the BAT region moved');
  const entries = 200 * 1024 + Math.floor((200 * 1024 - 1) / 4096);
  assert.ok(regions[0]!.length >= entries * 8, `the new region holds ${entries} entries`);
  assert.match(await ok('vhdiinfo', [p]), /Media size\s*:.*\(214748364800 bytes\)/);
  // qemu writes past the old region's reach; qemu-io's own pattern check reads the old data
  await ok('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x77 150G 2M', p]);
  const d = await Disk.open(p, { readOnly: true });
  try {
    assert.ok((await d.read(150 * GiB, 2 * MiB)).equals(Buffer.alloc(2 * MiB, 0x77)));
    assert.ok((await d.read(MiB, 3 * MiB)).equals(Buffer.alloc(3 * MiB, 0x5a)));
    assert.ok((await d.read(39 * MiB, MiB)).equals(Buffer.alloc(MiB, 0x11)));
  } finally {
    await d.close();
  }
  const c = await compact(p);
  assert.ok(c.fileBytesAfter < c.fileBytesBefore, `compact with the BAT among the blocks gave space back (${c.fileBytesBefore} -> ${c.fileBytesAfter})`);
  await ok('qemu-img', ['check', '-q', '-f', 'vhdx', p]);
  await ok('qemu-io', ['-f', 'vhdx', '-c', 'read -P 0x77 150G 2M', '-c', 'read -P 0x5a 1M 3M', '-c', 'read -P 0x11 39M 1M', '-c', 'read -P 0 4M 35M', p]);
  await clean(p, 'after compact');
  // defragment steps around the moved BAT region too
  await ok('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x66 100G 1M', '-c', 'write -P 0x55 20M 1M', p]);
  const f = await defragment(p);
  assert.ok(f.fileBytesAfter <= f.fileBytesBefore, `defragment did not grow the file (${f.fileBytesBefore} -> ${f.fileBytesAfter})`);
  await ok('qemu-img', ['check', '-q', '-f', 'vhdx', p]);
  await ok('qemu-io', ['-f', 'vhdx', '-c', 'read -P 0x77 150G 2M', '-c', 'read -P 0x66 100G 1M', '-c', 'read -P 0x55 20M 1M', '-c', 'read -P 0x5a 1M 3M', '-c', 'read -P 0x11 39M 1M', '-c', 'read -P 0 4M 16M', p]);
  await clean(p, 'after defragment');
  const [moved] = await batRegions(p);
  assert.deepEqual(moved, regions[0], 'the BAT region stays where the grow put it');
});

test('VHDX: a dynamic image whose BAT has no room for sector bitmaps becomes a differencing one', async (t) => {
  if (!skipUnless(t, 'vhdiinfo')) return;
  const dir = (await tmpDir(t)).path;
  const size = 131040 * MiB; // 131071 entries as dynamic, 131104 as differencing (1 MiB region: 131072)
  const base = join(dir, 'base.vhdx');
  const child = join(dir, 'child.vhdx');
  const pattern = xorshiftBytes(MiB, 5);
  const b = await Disk.create(base, { format: 'vhdx', capacity: size, blockSize: MiB });
  await b.write(size - MiB, pattern);
  await b.close();
  const c = await Disk.create(child, { format: 'vhdx', capacity: size, blockSize: MiB });
  await c.write(0, Buffer.alloc(MiB, 0x42));
  const [before] = await batRegions(child);
  const x = await Disk.open(base, { readOnly: true });
  const parentId = x.image.identity()!;
  await x.close();
  await c.image.setBacking!({ hint: 'base.vhdx', parentId });
  await c.close();
  const [after] = await batRegions(child);
  assert.notEqual(after!.offset, before!.offset, 'the BAT region moved');
  const d = await Disk.open(child, { readOnly: true });
  try {
    assert.equal((await d.info()).numLinks, 2, 'the child reaches its parent');
    assert.ok((await d.read(0, MiB)).equals(Buffer.alloc(MiB, 0x42)));
    assert.ok((await d.read(size - MiB, MiB)).equals(pattern), 'the parent\'s data shows through');
  } finally {
    await d.close();
  }
  await clean(child, 'the child');
  assert.match(await ok('vhdiinfo', [child]), /Parent identifier/);
});

test('VHDX grow that moves the BAT, killed at random moments (20 runs), leaves the old or the new disk', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'd.vhdx');
  const from = 100 * GiB;
  const to = 200 * GiB;
  const pattern = xorshiftBytes(MiB, 9);
  const rnd = mulberry32(6007);
  let killed = 0;
  let finished = 0;
  const fresh = async () => {
    await rm(p, { force: true });
    await ok('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', p, String(from)]);
    const w = await Disk.open(p);
    await w.write(2 * MiB, pattern);
    await w.write(from - MiB, pattern);
    await w.close();
  };
  // one whole run times the grow, so the kills spread over all of it
  await fresh();
  const templateBytes = (await stat(p)).size;
  let oldSizeGrownFile = 0;
  let newSize = 0;
  let started = 0;
  let whole = 0;
  await runKilledWhen(WORKER, ['resize', p, String(to - from), '1'], (line) => {
    if (line === 'ready') started = performance.now();
    if (line.startsWith('done ')) whole = performance.now() - started;
    return false;
  });
  assert.ok(whole > 0, 'the untimed run finished');
  for (let i = 0; i < 20; i++) {
    await fresh();
    const delay = rnd() * whole * 1.5;
    const r = await runKilledWhen(WORKER, ['resize', p, String(to - from), '1'], (line) => {
      if (line !== 'ready') return false;
      const until = performance.now() + delay;
      while (performance.now() < until);
      return true;
    });
    if (r.killed) killed++;
    const done = r.lines.includes(`done ${to}`);
    if (done) finished++;
    const grownFile = (await stat(p)).size > templateBytes;
    // a read-only open reads through a pending log; a read-write one replays it
    for (const readOnly of [true, false]) {
      const d = await Disk.open(p, { readOnly });
      try {
        if (readOnly && grownFile) (d.capacity === to ? newSize++ : oldSizeGrownFile++);
        assert.ok(done ? d.capacity === to : d.capacity === from || d.capacity === to, `run ${i}: size ${d.capacity}`);
        assert.ok((await d.read(2 * MiB, MiB)).equals(pattern), `run ${i}: data at 2 MiB`);
        assert.ok((await d.read(from - MiB, MiB)).equals(pattern), `run ${i}: data at the old end`);
        const data = (await d.blockStatus()).filter((x) => x.state === 'data').reduce((n, x) => n + x.length, 0);
        assert.equal(data, 2 * MiB, `run ${i}: nothing else is stored`);
      } finally {
        await d.close();
      }
    }
    const args = ['check', '-q', '-f', 'vhdx', p];
    const q = await run('qemu-img', args);
    assert.ok(q.code === 0 || q.code === 3, describeRun('qemu-img', args, q));
    await clean(p, `run ${i}`);
  }
  t.diagnostic(`a whole grow ${whole.toFixed(0)} ms; ${killed} of 20 grows killed, ${finished} finished; killed with the file grown: ${oldSizeGrownFile} at the old size, ${newSize} at the new`);
  assert.ok(killed >= 3, 'some kills landed inside the grow');
});
