/**
 * `vdkit amend -o` against qemu-img 7.2 (issue 16): after each amend `qemu-img info
 * --output=json` shows the new compat / refcount-bits / lazy-refcounts, `qemu-img check` is
 * clean, `qemu-img compare` finds the data unchanged, and snapshots still read as taken.
 * Refusals change nothing; unknown keys are wrong usage (exit 2) naming the valid keys.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { describeRun, run, runVdkit, skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, runOk } from './support.js';

interface Qcow2Specific {
  compat: string;
  'refcount-bits': number;
  'lazy-refcounts'?: boolean;
}

async function specific(img: string): Promise<Qcow2Specific> {
  const r = await runOk('qemu-img', ['info', '--output=json', img], 'qemu-img info');
  return (JSON.parse(r.stdout) as { 'format-specific': { data: Qcow2Specific } })['format-specific'].data;
}

async function amendOk(dir: string, img: string, list: string): Promise<void> {
  const r = await runVdkit(['amend', '-o', list, img], dir);
  assert.equal(r.code, 0, describeRun('vdkit', ['amend', '-o', list, img], r));
  const c = await run('qemu-img', ['check', img]);
  assert.equal(c.code, 0, `qemu-img check after amend -o ${list}\n${c.stdout}${c.stderr}`);
  const v = await runVdkit(['check', img], dir);
  assert.equal(v.code, 0, `vdkit check after amend -o ${list}\n${v.stdout}${v.stderr}`);
}

async function sameData(img: string, raw: string, when: string): Promise<void> {
  const r = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', raw, img]);
  assert.equal(r.code, 0, `qemu-img compare after ${when}: ${r.stdout}${r.stderr}`);
}

test('qcow2 amend: refcount_bits, lazy_refcounts and compat as qemu-img info reports them, data and snapshots unchanged', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = await tmpDir(t);
  const img = join(dir.path, 'a.qcow2');
  const raw = join(dir.path, 'a.raw');
  await runOk('qemu-img', ['create', '-f', 'qcow2', img, String(16 * MiB)], 'create');
  await runOk('qemu-io', ['-c', 'write -P 0x31 0 2M', '-c', 'write -c -P 0x32 4M 64k', img], 'qemu-io');
  await runOk('qemu-img', ['snapshot', '-c', 'keep', img], 'snapshot');
  await runOk('qemu-io', ['-c', 'write -P 0x33 1M 2M', img], 'qemu-io');
  await runOk('qemu-img', ['convert', '-O', 'raw', img, raw], 'convert');
  const snapRaw = join(dir.path, 'keep.raw');
  await runOk('qemu-img', ['convert', '-l', 'snapshot.name=keep', '-O', 'raw', img, snapRaw], 'convert -l');
  const keep = await readFile(snapRaw);

  for (const bits of [2, 64, 8, 16]) {
    await amendOk(dir.path, img, `refcount_bits=${bits}`);
    assert.equal((await specific(img))['refcount-bits'], bits);
    await sameData(img, raw, `refcount_bits=${bits}`);
  }
  await amendOk(dir.path, img, 'lazy_refcounts=on');
  assert.equal((await specific(img))['lazy-refcounts'], true);
  await amendOk(dir.path, img, 'lazy_refcounts=off');
  assert.equal((await specific(img))['lazy-refcounts'], false);

  // down to 0.10 and several keys at once (refcount width first, then the version)
  await amendOk(dir.path, img, 'refcount_bits=4');
  await amendOk(dir.path, img, 'compat=0.10,refcount_bits=16');
  const v2 = await specific(img);
  assert.deepEqual([v2.compat, v2['refcount-bits'], v2['lazy-refcounts']], ['0.10', 16, undefined]);
  await sameData(img, raw, 'compat=0.10');
  await amendOk(dir.path, img, 'compat=1.1,refcount_bits=32,lazy_refcounts=on');
  const v3 = await specific(img);
  assert.deepEqual([v3.compat, v3['refcount-bits'], v3['lazy-refcounts']], ['1.1', 32, true]);
  await sameData(img, raw, 'compat=1.1');
  const out = join(dir.path, 'keep2.raw');
  await runOk('qemu-img', ['convert', '-l', 'snapshot.name=keep', '-O', 'raw', img, out], 'convert -l after amends');
  assert.ok((await readFile(out)).equals(keep), 'the snapshot reads as taken after every amend');
  // QEMU still writes to it
  await runOk('qemu-io', ['-c', 'write -P 0x34 8M 1M', img], 'qemu-io after amends');
  assert.equal((await run('qemu-img', ['check', img])).code, 0);
});

test('qcow2 amend refusals change nothing: refcount that does not fit, v3-only features, wrong values', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = await tmpDir(t);
  const img = join(dir.path, 'r.qcow2');
  await runOk('qemu-img', ['create', '-f', 'qcow2', img, String(8 * MiB)], 'create');
  await runOk('qemu-io', ['-c', 'write -P 0x41 0 1M', '-c', 'write -z 2M 64k', img], 'qemu-io');
  await runOk('qemu-img', ['snapshot', '-c', 's', img], 'snapshot');
  const before = await readFile(img);
  const cases: [string, RegExp, number][] = [
    // the snapshot makes refcount 2: one bit cannot hold it
    ['refcount_bits=1', /NOTSUPPORTED.*refcount 2, more than refcount_bits=1/, 1],
    ['compat=0.10', /NOTSUPPORTED.*compat=0.10.*zero clusters/, 1],
    ['compat=0.10,refcount_bits=8', /INVAL.*16-bit refcounts only/, 1],
    ['refcount_bits=3', /INVAL.*power of two/, 1],
    ['lazy_refcounts=yes', /INVAL.*on or off/, 1],
    ['compat=2.0', /INVAL.*unknown compat level/, 1],
    ['cluster_size=4096', /no amend option "cluster_size"; valid: compat, refcount_bits, lazy_refcounts/, 2],
    ['compat', /KEY=VALUE/, 2],
  ];
  for (const [list, message, code] of cases) {
    const r = await runVdkit(['amend', '-o', list, img], dir.path);
    assert.equal(r.code, code, describeRun('vdkit', ['amend', '-o', list, img], r));
    assert.match(r.stderr, message, list);
    assert.ok((await readFile(img)).equals(before), `amend -o ${list} refused without a change`);
  }
  // lazy refcounts on are a v3 feature too
  await amendOk(dir.path, img, 'lazy_refcounts=on');
  const v2 = await runVdkit(['amend', '-o', 'compat=0.10', img], dir.path);
  assert.equal(v2.code, 1);
  assert.match(v2.stderr, /lazy refcounts need compat=1.1/);
});

test('vmdk amend: adapter_type and hwversion in the descriptor; other formats refused', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = await tmpDir(t);
  const img = join(dir.path, 'v.vmdk');
  await runOk('qemu-img', ['create', '-f', 'vmdk', img, String(4 * MiB)], 'create');
  await runOk('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x51 0 1M', img], 'qemu-io');
  const raw = join(dir.path, 'v.raw');
  await runOk('qemu-img', ['convert', '-O', 'raw', img, raw], 'convert');
  const r = await runVdkit(['amend', '-o', 'adapter_type=lsilogic,hwversion=6', img], dir.path);
  assert.equal(r.code, 0, describeRun('vdkit', ['amend'], r));
  const text = (await readFile(img)).subarray(512, 512 + 1024).toString('latin1');
  assert.match(text, /ddb\.adapterType = "lsilogic"/);
  assert.match(text, /ddb\.virtualHWVersion = "6"/);
  assert.equal((await run('qemu-img', ['check', img])).code, 0);
  assert.equal((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', raw, img])).code, 0, 'data unchanged');

  const bad = await runVdkit(['amend', '-o', 'compat=1.1', img], dir.path);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /vmdk has no amend option "compat"; valid: adapter_type, hwversion/);
  const vdi = join(dir.path, 'x.vdi');
  assert.equal((await runVdkit(['create', '-f', 'vdi', vdi, '1M'], dir.path)).code, 0);
  const none = await runVdkit(['amend', '-o', 'compat=1.1', vdi], dir.path);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /NOTSUPPORTED.*vdi images have no options to amend/);
});
