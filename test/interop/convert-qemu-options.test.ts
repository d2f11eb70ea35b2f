/**
 * convert's qemu-img parity options against qemu-img convert on the same inputs: -n and
 * --target-is-zero (the existing target's bytes, inside and past the source's size, equal
 * qemu-img's), -B/-F (a child that qemu-img compares equal to the source, small where the
 * source equals the backing file), -S (0 allocates everything as qemu-img's does; 4k leaves
 * the holes qemu-img leaves), -W/-m/-U (accepted with qemu-img's range checks, same output) and
 * -l (internal snapshots made by qemu-img snapshot read as qemu-img convert -l reads them).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeRun, run, runVdkit, skipUnless, tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';

const KiB = 1024;
const MiB = 1024 * KiB;

async function ok(cmd: string, args: string[], cwd: string) {
  const r = cmd === 'vdkit' ? await runVdkit(args, cwd) : await run(cmd, args, { cwd });
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r;
}

async function usage(args: string[], cwd: string, code: number, says: RegExp) {
  const r = await runVdkit(args, cwd);
  assert.equal(r.code, code, describeRun('vdkit', args, r));
  assert.match(r.stderr, says, describeRun('vdkit', args, r));
}

/** 4 MiB: random 0-64K, zeros, random 1M-1M+4K, zeros, a byte pattern 3M-3M+128K */
function source(): Buffer {
  const b = Buffer.alloc(4 * MiB);
  xorshiftBytes(64 * KiB, 7).copy(b, 0);
  xorshiftBytes(4 * KiB, 8).copy(b, MiB);
  b.fill(0x5a, 3 * MiB, 3 * MiB + 128 * KiB);
  return b;
}

const qemuRaw = async (image: string, out: string, cwd: string) => {
  await ok('qemu-img', ['convert', '-O', 'raw', image, out], cwd);
  return readFile(join(cwd, out));
};

test('convert -n / --target-is-zero: the existing target ends as qemu-img convert -n leaves it, bytes past the source untouched', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  await writeFile(join(dir, 'src.raw'), source());
  // a 6 MiB target full of 0x99: the source's zero ranges must become zeros, its last 2 MiB stay
  const fresh = async (name: string) => {
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', name, '6M'], dir);
    await ok('qemu-io', ['-c', 'write -P 0x99 0 6M', name], dir);
  };
  for (const [flags, tag] of [[[], 'plain'], [['--target-is-zero'], 'tiz']] as const) {
    await fresh(`ours-${tag}.qcow2`);
    await fresh(`theirs-${tag}.qcow2`);
    await ok('vdkit', ['convert', '-n', ...flags, 'src.raw', `ours-${tag}.qcow2`], dir);
    await ok('qemu-img', ['convert', '-n', ...flags, '-f', 'raw', '-O', 'qcow2', 'src.raw', `theirs-${tag}.qcow2`], dir);
    const ours = await qemuRaw(`ours-${tag}.qcow2`, `ours-${tag}.raw`, dir);
    const theirs = await qemuRaw(`theirs-${tag}.qcow2`, `theirs-${tag}.raw`, dir);
    assert.equal(ours.length, 6 * MiB, tag);
    // with --target-is-zero over a target that is not zero, what zero ranges end as is left open
    // (qemu-img skips zeros per 4 KiB, vdkit per cluster): the data and the tail must agree
    if (tag === 'plain') assert.ok(ours.equals(theirs), `${tag}: vdkit's -n result differs from qemu-img's`);
    else for (const [at, len] of [[0, 64 * KiB], [MiB, 4 * KiB], [3 * MiB, 128 * KiB], [4 * MiB, 2 * MiB]]) assert.ok(ours.subarray(at!, at! + len!).equals(theirs.subarray(at!, at! + len!)), `${tag}: at ${at}`);
    assert.ok(ours.subarray(4 * MiB).every((x) => x === 0x99), `${tag}: bytes past the source's size changed`);
    await ok('qemu-img', ['check', '-q', `ours-${tag}.qcow2`], dir);
  }
  // without --target-is-zero the source is copied exactly; with it, its zero ranges are skipped (old bytes stay)
  const plain = await readFile(join(dir, 'ours-plain.raw'));
  assert.ok(plain.subarray(0, 4 * MiB).equals(source()));
  const tiz = await readFile(join(dir, 'ours-tiz.raw'));
  assert.equal(tiz[2 * MiB], 0x99, '--target-is-zero wrote a zero range');
  // into a target that does read as zeros, --target-is-zero gives the source
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', 'zero.qcow2', '4M'], dir);
  await ok('vdkit', ['convert', '-n', '--target-is-zero', 'src.raw', 'zero.qcow2'], dir);
  await ok('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', 'src.raw', 'zero.qcow2'], dir);
  // refusals, named by their option
  await ok('qemu-img', ['create', '-q', '-f', 'raw', 'small.raw', '2M'], dir);
  await usage(['convert', '-n', 'src.raw', 'small.raw'], dir, 1, /smaller than the source/);
  await usage(['convert', '-n', '-o', 'cluster_size=4k', 'src.raw', 'zero.qcow2'], dir, 2, /-o: no effect when skipping image creation/);
  await usage(['convert', '--target-is-zero', 'src.raw', 'new.qcow2'], dir, 2, /--target-is-zero requires use of -n/);
  await usage(['convert', '-n', 'src.raw', 'missing.qcow2'], dir, 1, /missing\.qcow2/);
});

test('convert -B/-F: a child of the backing file, equal to the source per qemu-img compare, holding only what differs', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const base = Buffer.alloc(8 * MiB);
  xorshiftBytes(8 * MiB, 11).copy(base);
  await writeFile(join(dir, 'base.raw'), base);
  const mod = Buffer.from(base);
  mod.fill(0x66, 1 * MiB, 1 * MiB + 64 * KiB); // changed
  mod.fill(0, 3 * MiB, 3 * MiB + 128 * KiB); // zeroed: must be written, or the child reads the base there
  await writeFile(join(dir, 'mod.raw'), mod);
  for (const fmt of ['qcow2', 'vmdk', 'vdi', 'vhdx']) {
    // a parent of the child's format (vmdk/vdi/vhdx record their parent's identity)
    const parent = fmt === 'qcow2' ? 'base.raw' : `base.${fmt}`;
    if (fmt !== 'qcow2') await ok('vdkit', ['convert', '-O', fmt, 'base.raw', parent], dir);
    const child = `child.${fmt}`;
    await ok('vdkit', ['convert', '-B', parent, '-F', fmt === 'qcow2' ? 'raw' : fmt, '-O', fmt, 'mod.raw', child], dir);
    // qemu-img reads no VDI or VHDX child ("non-NULL link UUID", "Operation not supported"): vdkit's own reading checks those
    const qemuReads = fmt === 'qcow2' || fmt === 'vmdk';
    if (qemuReads) await ok('qemu-img', ['compare', '-f', 'raw', 'mod.raw', child], dir);
    await ok('vdkit', ['convert', '-O', 'raw', child, `back-${fmt}.raw`], dir);
    assert.ok((await readFile(join(dir, `back-${fmt}.raw`))).equals(mod), `${fmt}: the child does not read as the source`);
    if (qemuReads) {
      const info = JSON.parse((await ok('qemu-img', ['info', '--output=json', child], dir)).stdout) as { 'backing-filename'?: string; 'actual-size': number };
      assert.equal(info['backing-filename'], parent, fmt);
    }
    // 192 KiB differ (VDI: two 1 MiB blocks): the child holds at least 5 MiB less than a whole copy
    await ok('vdkit', ['convert', '-O', fmt, 'mod.raw', `whole.${fmt}`], dir);
    const held = (await stat(join(dir, child))).blocks * 512;
    const whole = (await stat(join(dir, `whole.${fmt}`))).blocks * 512;
    assert.ok(held <= whole - 5 * MiB, `${fmt}: child holds ${held} bytes, a whole copy ${whole}`);
    if (fmt === 'qcow2') await ok('qemu-img', ['check', '-q', child], dir);
  }
  // BACKING is named relative to the target's folder, as qemu-img resolves a backing file name
  await mkdir(join(dir, 'sub'));
  await usage(['convert', '-B', 'base.raw', '-F', 'raw', '-O', 'qcow2', 'mod.raw', 'sub/x.qcow2'], dir, 1, /sub\/base\.raw/);
  await copyFile(join(dir, 'base.raw'), join(dir, 'sub', 'base.raw'));
  await ok('vdkit', ['convert', '-B', 'base.raw', '-F', 'raw', '-O', 'qcow2', 'mod.raw', 'sub/x.qcow2'], dir);
  await ok('qemu-img', ['compare', '-f', 'raw', 'mod.raw', 'sub/x.qcow2'], dir);
  await usage(['convert', '-F', 'raw', '-O', 'qcow2', 'mod.raw', 'x.qcow2'], dir, 2, /-F: a backing format needs a backing file \(-B\)/);
  await usage(['convert', '-B', 'base.raw', '-O', 'raw', 'mod.raw', 'x.raw'], dir, 1, /raw disks cannot be children/);
  await usage(['convert', '-n', '-B', 'base.raw', 'mod.raw', 'child.qcow2'], dir, 2, /-B: no effect when skipping image creation/);
});

test('convert -S: 0 allocates every cluster as qemu-img does, 4k leaves the holes qemu-img leaves; limits as qemu-img', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  await writeFile(join(dir, 'src.raw'), source());
  const dataMap = async (f: string) =>
    (JSON.parse((await ok('qemu-img', ['map', '--output=json', f], dir)).stdout) as { start: number; length: number; data: boolean }[]).map((e) => ({ start: e.start, length: e.length, data: e.data }));
  for (const [s, fmt] of [['0', 'qcow2'], ['0', 'vdi'], ['4k', 'qcow2'], ['4k', 'raw'], ['1M', 'qcow2']] as const) {
    const ours = `ours-${s}.${fmt}`;
    const theirs = `theirs-${s}.${fmt}`;
    await ok('vdkit', ['convert', '-S', s, '-O', fmt, 'src.raw', ours], dir);
    await ok('qemu-img', ['convert', '-S', s, '-f', 'raw', '-O', fmt, 'src.raw', theirs], dir);
    await ok('qemu-img', ['compare', '-f', 'raw', 'src.raw', ours], dir);
    if (fmt === 'raw') assert.equal((await stat(join(dir, ours))).blocks, (await stat(join(dir, theirs))).blocks, `-S ${s} raw: allocated blocks`);
    else if (!(s === '1M')) assert.deepEqual(await dataMap(ours), await dataMap(theirs), `-S ${s} ${fmt}: allocation map`);
  }
  // -S 0: no zero cluster at all
  assert.ok((await dataMap('ours-0.qcow2')).every((e) => e.data));
  // -S 1M: a zero run shorter than 1 MiB between data is written, not left a hole
  const m = await dataMap('ours-1M.qcow2');
  assert.ok(m.some((e) => e.data && e.start === 0 && e.length >= MiB + 4 * KiB), JSON.stringify(m));
  await usage(['convert', '-S', '100', '-O', 'raw', 'src.raw', 'x.raw'], dir, 2, /-S: invalid buffer size/);
  await usage(['convert', '-S', '32M', '-O', 'raw', 'src.raw', 'x.raw'], dir, 2, /-S: .*multiples of 512 up to 16777216/);
  await usage(['convert', '-S', '4k', '-c', '-O', 'qcow2', 'src.raw', 'x.qcow2'], dir, 2, /-S: compressed output/);
});

test('convert -W, -m N, -U, -o: qemu-img range checks; the output is the source', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const big = Buffer.alloc(24 * MiB);
  for (let o = 0; o < big.length; o += 3 * MiB) xorshiftBytes(MiB, o).copy(big, o);
  await writeFile(join(dir, 'src.raw'), big);
  for (const flags of [['-W'], ['-m', '1'], ['-m', '16', '-W'], ['-U']]) {
    await ok('vdkit', ['convert', ...flags, '-O', 'qcow2', 'src.raw', `out${flags.join('')}.qcow2`], dir);
    await ok('qemu-img', ['compare', '-f', 'raw', 'src.raw', `out${flags.join('')}.qcow2`], dir);
  }
  // -o: create options, as qemu-img convert -o
  await ok('vdkit', ['convert', '-o', 'cluster_size=4k,compat=0.10', '-O', 'qcow2', 'src.raw', 'o.qcow2'], dir);
  const info = JSON.parse((await ok('qemu-img', ['info', '--output=json', 'o.qcow2'], dir)).stdout) as { 'cluster-size': number; 'format-specific': { data: { compat: string } } };
  assert.equal(info['cluster-size'], 4096);
  assert.equal(info['format-specific'].data.compat, '0.10');
  await ok('qemu-img', ['compare', '-f', 'raw', 'src.raw', 'o.qcow2'], dir);
  await ok('vdkit', ['convert', '-o', 'adapter_type=lsilogic,hwversion=11', '-O', 'vmdk', 'src.raw', 'o.vmdk'], dir);
  const descriptor = (await readFile(join(dir, 'o.vmdk'))).subarray(512, 512 + 1024).toString('latin1');
  assert.match(descriptor, /ddb\.adapterType = "lsilogic"/);
  assert.match(descriptor, /ddb\.virtualHWVersion = "11"/);
  // -m with -c: the compression threads
  await ok('vdkit', ['convert', '-c', '-m', '2', '-O', 'qcow2', 'src.raw', 'c.qcow2'], dir);
  await ok('qemu-img', ['compare', '-f', 'raw', 'src.raw', 'c.qcow2'], dir);
  await usage(['convert', '-c', '-W', '-O', 'qcow2', 'src.raw', 'x.qcow2'], dir, 2, /-W: compressed output/);
  for (const m of ['0', '17', 'x']) await usage(['convert', '-m', m, '-O', 'raw', 'src.raw', 'x.raw'], dir, 2, /-m: invalid number of coroutines/);
  const help = (await ok('vdkit', ['convert', '--help'], dir)).stdout;
  assert.match(help.replace(/\s+/g, ' '), /-U, --force-share .*never locks/);
});

test('convert -l: qcow2 internal snapshots (made by qemu-img snapshot) read as qemu-img convert -l reads them', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', 's.qcow2', '4M'], dir);
  await ok('qemu-io', ['-c', 'write -P 1 0 64k', 's.qcow2'], dir);
  await ok('qemu-img', ['snapshot', '-c', 'one', 's.qcow2'], dir);
  await ok('qemu-io', ['-c', 'write -P 2 0 32k', '-c', 'write -P 3 2M 64k', 's.qcow2'], dir);
  await ok('qemu-img', ['snapshot', '-c', '1', 's.qcow2'], dir); // id 2, named "1": a bare "1" is id 1
  await ok('qemu-img', ['resize', '-q', 's.qcow2', '8M'], dir);
  await ok('qemu-io', ['-c', 'write -P 4 6M 64k', '-c', 'write -z 0 64k', 's.qcow2'], dir);
  for (const l of ['one', 'snapshot.name=one', 'snapshot.id=1', '1', 'snapshot.name=1', 'snapshot.id=2,snapshot.name=1', '2']) {
    await ok('vdkit', ['convert', '--overwrite', '-l', l, '-O', 'raw', 's.qcow2', 'ours.raw'], dir);
    await ok('qemu-img', ['convert', '-l', l, '-O', 'raw', 's.qcow2', 'theirs.raw'], dir);
    const ours = await readFile(join(dir, 'ours.raw'));
    assert.ok(ours.equals(await readFile(join(dir, 'theirs.raw'))), `-l ${l}: differs from qemu-img convert -l`);
    await ok('vdkit', ['convert', '--overwrite', '-l', l, '-O', 'qcow2', 's.qcow2', 'ours.qcow2'], dir);
    await ok('qemu-img', ['compare', '-f', 'raw', 'theirs.raw', 'ours.qcow2'], dir);
    await ok('qemu-img', ['convert', '-q', '-O', 'raw', 'ours.qcow2', 'back.raw'], dir);
    await copyFile(join(dir, 'back.raw'), join(dir, `back-${l}.raw`));
  }
  // the snapshots hold what was written before them, not the active state
  const one = await readFile(join(dir, 'back-one.raw'));
  assert.equal(one[0], 1);
  assert.equal(one[2 * MiB], 0);
  const two = await readFile(join(dir, 'back-2.raw'));
  assert.equal(two[0], 2);
  assert.equal(two[32 * KiB], 1);
  assert.equal(two[2 * MiB], 3);
  assert.equal(two[6 * MiB], 0);
  await usage(['convert', '-l', 'nosuch', '-O', 'raw', 's.qcow2', 'x.raw'], dir, 1, /no internal snapshot with "nosuch".*1 one, 2 1/);
  await usage(['convert', '-l', 'snapshot.id=1,snapshot.name=1', '-O', 'raw', 's.qcow2', 'x.raw'], dir, 1, /no internal snapshot with id "1" and name "1"/);
  await usage(['convert', '-l', 'snapshot.foo=1', '-O', 'raw', 's.qcow2', 'x.raw'], dir, 2, /-l: unknown parameter "snapshot.foo"/);
  await usage(['convert', '-l', 'one', '-O', 'raw', 'back-one.raw', 'x.raw'], dir, 1, /NOTSUPPORTED.*raw images have no internal snapshots/);
});

test('convert --bitmaps: qcow2 to qcow2 with none to copy; other ends refused as qemu-img refuses them; bitmaps themselves refused, not dropped', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  await ok('qemu-img', ['create', '-f', 'qcow2', 'none.qcow2', '4M'], dir);
  await ok('qemu-img', ['create', '-f', 'qcow2', 'some.qcow2', '4M'], dir);
  await ok('qemu-img', ['bitmap', '--add', 'some.qcow2', 'b0'], dir);
  await ok('qemu-img', ['create', '-f', 'raw', 'plain.raw', '4M'], dir);
  await ok('vdkit', ['convert', '--bitmaps', '-O', 'qcow2', 'none.qcow2', 'out.qcow2'], dir);
  assert.equal((await run('qemu-img', ['compare', join(dir, 'none.qcow2'), join(dir, 'out.qcow2')])).code, 0);
  // what qemu-img says no to (vmdk target: 'does not support bitmaps'; raw source: 'lacks bitmap support')
  assert.notEqual((await run('qemu-img', ['convert', '--bitmaps', '-O', 'vmdk', join(dir, 'none.qcow2'), join(dir, 'q.vmdk')])).code, 0);
  await usage(['convert', '--bitmaps', '-O', 'vmdk', 'none.qcow2', 'x.vmdk'], dir, 2, /vmdk cannot hold persistent bitmaps/);
  await usage(['convert', '--bitmaps', '-O', 'qcow2', 'plain.raw', 'x.qcow2'], dir, 2, /raw, which has no persistent bitmaps/);
  await usage(['convert', '--bitmaps', '-n', 'none.qcow2', 'out.qcow2'], dir, 2, /--bitmaps cannot be combined with -n/);
  // an image with a bitmap: refused (exit 1), nothing made
  const r = await runVdkit(['convert', '--bitmaps', '-O', 'qcow2', 'some.qcow2', 'y.qcow2'], dir);
  assert.equal(r.code, 1, describeRun('vdkit', ['convert', '--bitmaps'], r));
  assert.match(r.stderr, /NOTSUPPORTED.*copying persistent dirty bitmaps is not supported yet \(some\.qcow2 has 1\)/);
  await assert.rejects(stat(join(dir, 'y.qcow2')));
});
