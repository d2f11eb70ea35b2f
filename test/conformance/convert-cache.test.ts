/**
 * `convert --cache unsafe` (qemu-img convert's default: no fdatasync) writes the same image as
 * the default durable mode; a wrong mode is a usage error. The cache mode is an option of a
 * namespace instance (no process-global switch): a convert through an unsafe namespace works,
 * and every in-place operation refuses one, since it needs flush barriers for crash safety.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Disk, DiskError, FileNamespace, MemoryNamespace, checkDisk, commit, compact, compare, convert, createChild, defragment, rebase, resize } from '../../src/index.js';
import * as lib from '../../src/index.js';
import { run, tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';

const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;
const MiB = 2 ** 20;

test('convert --cache unsafe writes the same image as the default; bad modes are usage errors', async (t) => {
  const dir = (await tmpDir(t)).path;
  const src = join(dir, 'src.img');
  const d = await Disk.create(src, { format: 'raw', capacity: 16 * MiB });
  await d.write(3 * MiB + 7, xorshiftBytes(2 * MiB, 5));
  await d.close();
  for (const [fmt, ext] of [['qcow2', 'qcow2'], ['vmdk', 'vmdk'], ['vhdx', 'vhdx']] as const) {
    for (const mode of ['writeback', 'unsafe']) {
      const out = join(dir, `${mode}.${ext}`);
      const r = await run(process.execPath, [BIN, 'convert', '-f', 'raw', '-O', fmt, '--cache', mode, src, out]);
      assert.equal(r.code, 0, r.stderr);
      const a = await Disk.open(src, { readOnly: true, format: 'raw' });
      const b = await Disk.open(out, { readOnly: true });
      assert.ok((await compare(a, b)).identical, `${fmt} with --cache ${mode}`);
      await a.close();
      await b.close();
    }
  }
  const bad = await run(process.execPath, [BIN, 'convert', '-f', 'raw', '--cache', 'none', src, join(dir, 'x.vmdk')]);
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /writeback, unsafe/);
  assert.equal((lib as Record<string, unknown>).setCacheMode, undefined, 'no process-global cache mode');
});

test('cache mode belongs to a namespace: convert through an unsafe one, in-place operations refuse it', async (t) => {
  const dir = (await tmpDir(t)).path;
  const src = join(dir, 'src.img');
  const d = await Disk.create(src, { format: 'raw', capacity: 4 * MiB });
  await d.write(MiB, xorshiftBytes(MiB, 9));
  await d.close();
  for (const ns of [new FileNamespace({ cacheMode: 'unsafe' }), new MemoryNamespace({ cacheMode: 'unsafe' })]) {
    const base = ns instanceof MemoryNamespace ? '/img' : dir;
    const out = join(base, 'fast.vmdk');
    const a = await Disk.open(src, { readOnly: true, format: 'raw' });
    await convert(a, out, { format: 'vmdk', namespace: ns });
    const b = await Disk.open(out, { readOnly: true, namespace: ns });
    assert.equal(b.namespace, ns);
    assert.ok((await compare(a, b)).identical, `${ns.label}: the unsafe convert wrote the same disk`);
    await a.close();
    await b.close();
    await (await createChild(out, join(base, 'kid.vmdk'), { namespace: ns })).close();
    const refused = (e: unknown) => e instanceof DiskError && e.code === 'NOTSUPPORTED' && /cache mode 'unsafe'/.test(e.message);
    const opts = { namespace: ns };
    await assert.rejects(compact(out, opts), refused, 'compact');
    await assert.rejects(defragment(out, opts), refused, 'defragment');
    await assert.rejects(resize(out, 8 * MiB, opts), refused, 'resize');
    await assert.rejects(checkDisk(out, { repair: true, ...opts }), refused, 'repair');
    await assert.rejects(commit(join(base, 'kid.vmdk'), opts), refused, 'commit');
    await assert.rejects(rebase(join(base, 'kid.vmdk'), undefined, opts), refused, 'rebase');
    // a check (no repair) and a dry run change nothing: allowed
    assert.equal((await checkDisk(out, { repair: false, ...opts })).findings.length, 0);
  }
});
