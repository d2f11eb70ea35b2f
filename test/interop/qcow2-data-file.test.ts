/**
 * qcow2 with an external data file (header extension 0x44415441, incompatible bit 2; autoclear
 * bit 1 data_file_raw) both ways with qemu-img 7.2: an image qemu-img created and qemu-io wrote
 * reads equal in vdkit (the data file named relative to the image's folder, opened through the
 * same namespace); vdkit writes (write, convert -n, the Disk API) into qemu-made ones and
 * qemu-img check and compare agree; vdkit create writes qemu-img create's bytes, keeps a raw
 * data file raw, and check/info call nothing a leak; info shows the data file as qemu-img does;
 * compressed output with a data file is refused as qemu refuses it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, DiskError } from '../../src/index.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';

const KiB = 1024;
const MiB = 2 ** 20;
const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;

async function ok(cmd: string, args: string[], cwd?: string): Promise<string> {
  const r = await run(cmd, args, { cwd });
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r.stdout;
}
const vdkit = (args: string[], cwd?: string) => ok(process.execPath, [BIN, ...args], cwd);

/** qemu-img check: clean, nothing leaked */
async function clean(img: string, cwd?: string): Promise<void> {
  const out = await ok('qemu-img', ['check', img], cwd);
  assert.match(out, /No errors were found/);
  assert.doesNotMatch(out, /leak/i);
}

for (const raw of [false, true]) {
  const opt = `data_file=data.bin${raw ? ',data_file_raw=on' : ''}`;
  test(`data file${raw ? ' (raw)' : ''}: qemu-io's writes read equal in vdkit; vdkit's writes agree with qemu-img`, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    const dir = (await tmpDir(t)).path;
    // the image in a folder of its own. vdkit finds the data file beside it from anywhere;
    // QEMU 7.2 takes a relative data file name relative to its working folder (at create and
    // at open), so qemu's tools run in the image's folder
    const vm = join(dir, 'vm');
    await mkdir(vm);
    const img = join(vm, 'disk.qcow2');
    const qemu = (cmd: string, args: string[]) => ok(cmd, args, vm);
    await qemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', opt, img, '8M']);
    await qemu('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', '-c', 'write -P 0x22 1M 200k', '-c', 'write -z 1088k 64k', '-c', 'write -P 0x33 7M 4k', img]);
    const model = join(dir, 'model.raw');
    await qemu('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', img, model]);
    await vdkit(['compare', model, img]);
    // info: text and json as qemu-img shows them; check calls no cluster a leak
    const q = JSON.parse(await qemu('qemu-img', ['info', '--output=json', img])) as { 'format-specific': { data: Record<string, unknown> } };
    const v = JSON.parse(await vdkit(['info', '--output=json', img])) as typeof q;
    assert.equal(v['format-specific'].data['data-file'], 'data.bin');
    assert.deepEqual(v['format-specific'], q['format-specific']);
    const text = await vdkit(['info', img]);
    assert.match(text, /data file\s*: data\.bin/);
    assert.match(text, new RegExp(`data file raw\\s*: ${raw ? 'yes' : 'no'}`));
    assert.match(await vdkit(['check', img]), /No errors were found/);

    // vdkit writes: the CLI (into data, across clusters, into unwritten ground) and the Disk API
    const bytes = Buffer.from(await readFile(model));
    const patch = xorshiftBytes(150 * KiB, 3);
    await writeFile(join(dir, 'patch.bin'), patch);
    await vdkit(['write', '--offset', String(1000 * KiB + 7), '--input', join(dir, 'patch.bin'), img]);
    patch.copy(bytes, 1000 * KiB + 7);
    const d = await Disk.open(img);
    const more = xorshiftBytes(5000, 4);
    await d.write(5 * MiB + 100, more);
    more.copy(bytes, 5 * MiB + 100);
    await d.write(0, Buffer.alloc(64 * KiB)); // zeros over qemu's data
    bytes.fill(0, 0, 64 * KiB);
    await d.close();
    await writeFile(model, bytes);
    await clean(img, vm);
    await qemu('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', model, img]);
    if (raw) {
      // the data file still reads as the guest (the autoclear bit stays set: vdkit keeps it raw)
      assert.deepEqual(await readFile(join(dir, 'vm', 'data.bin')), bytes);
      assert.match(await qemu('qemu-img', ['info', img]), /data file raw: true/);
    }

    // convert -n into it: every byte of a new source
    const src = join(dir, 'src.raw');
    const fresh = xorshiftBytes(8 * MiB, 9);
    fresh.fill(0, 2 * MiB, 3 * MiB);
    await writeFile(src, fresh);
    await vdkit(['convert', '-n', '-O', 'qcow2', src, img]);
    await clean(img, vm);
    await qemu('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', src, img]);
  });
}

test('data file: vdkit create is qemu-img create byte for byte (but the name); its images pass qemu-img check', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  for (const raw of [false, true]) {
    const n = raw ? 1 : 0;
    const o = (who: string) => `data_file=${who}${n}.bin${raw ? ',data_file_raw=on' : ''}`;
    // the names have the same length: the images differ in that one byte only
    await vdkit(['create', '-f', 'qcow2', '-o', o('v'), join(dir, `v${n}.qcow2`), '64M']);
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', o('q'), join(dir, `q${n}.qcow2`), '64M'], dir);
    const [a, b] = [await readFile(join(dir, `v${n}.qcow2`)), await readFile(join(dir, `q${n}.qcow2`))];
    assert.equal(a.length, b.length);
    const diff = [...a.keys()].filter((i) => a[i] !== b[i]);
    assert.equal(diff.length, 1, `differ at ${diff.slice(0, 10).join(',')}`);
    assert.equal(a.subarray(diff[0]!, diff[0]! + 6).toString(), `v${n}.bin`);
    assert.equal((await readFile(join(dir, `v${n}.bin`))).length, 64 * MiB);
    await clean(join(dir, `v${n}.qcow2`), dir);
  }
  // convert makes one; qemu-img reads it equal to the source
  const src = join(dir, 's.raw');
  await writeFile(src, Buffer.concat([xorshiftBytes(MiB, 1), Buffer.alloc(MiB), xorshiftBytes(MiB, 2)]));
  await vdkit(['convert', '-O', 'qcow2', '-o', 'data_file=c.bin', src, join(dir, 'c.qcow2')]);
  await clean(join(dir, 'c.qcow2'), dir);
  await ok('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', src, join(dir, 'c.qcow2')], dir);
  // compressed clusters never go with a data file (qemu refuses them)
  const r = await run(process.execPath, [BIN, 'convert', '-c', '-O', 'qcow2', '-o', 'data_file=z.bin', src, join(dir, 'z.qcow2')]);
  assert.equal(r.code, 1, describeRun('vdkit convert -c', [], r));
  assert.match(r.stderr, /NOTSUPPORTED.*data file/);
});

test('data file: a name that leaves the image\'s folder is refused unless allowed; snapshots and compact are refused', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  await mkdir(join(dir, 'a'));
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'data_file=../outside.bin', join(dir, 'a', 'x.qcow2'), '1M'], join(dir, 'a'));
  await assert.rejects(Disk.open(join(dir, 'a', 'x.qcow2'), { readOnly: true }), (e: unknown) => e instanceof DiskError && e.code === 'EXTERNALEXTENT');
  const d = await Disk.open(join(dir, 'a', 'x.qcow2'), { readOnly: true, allowExternalExtents: true });
  assert.deepEqual((await d.info()).files.map((f) => f.replace(dir, '')), ['/a/x.qcow2', '/outside.bin']);
  await d.close();

  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'data_file=y.bin', join(dir, 'y.qcow2'), '1M'], dir);
  const y = await Disk.open(join(dir, 'y.qcow2'));
  try {
    const m = y.image.maintenance();
    await assert.rejects(m.snapshots!.create('s1'), (e: unknown) => e instanceof DiskError && e.code === 'NOTSUPPORTED');
    await assert.rejects(m.compact!({}), (e: unknown) => e instanceof DiskError && e.code === 'NOTSUPPORTED');
  } finally {
    await y.close();
  }
});
