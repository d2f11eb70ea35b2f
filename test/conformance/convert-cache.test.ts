/**
 * `convert --cache unsafe` (qemu-img convert's default: no fdatasync) writes the same image as
 * the default durable mode; a wrong mode is a usage error. Whether fdatasync runs is not
 * observable from here, so the library switch is also checked directly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Disk, cacheMode, compare, setCacheMode } from '../../src/index.js';
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
  assert.equal(cacheMode(), 'writeback', 'the library default is durable');
  setCacheMode('unsafe');
  assert.equal(cacheMode(), 'unsafe');
  setCacheMode('writeback');
});
