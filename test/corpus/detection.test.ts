/**
 * Detection by content (VDGetFormat): every image of the corpus is copied under misleading
 * names (another format's extension, no extension) and must still be recognised.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, detectFormat } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { bunzip, optionalTestdata, sharedTestdata, tmpDir } from '../helpers/tools.js';

test('every image is detected by its content, whatever its file name', async (t) => {
  const dir = (await tmpDir(t)).path;
  const made: [string, string][] = [];
  const make = async (name: string, format: string, type?: string) => {
    const p = join(dir, name);
    const d = await Disk.create(p, { format, type, capacity: 8 * 2 ** 20 });
    await d.write(0, Buffer.from('not a partition table, just bytes'));
    await d.close();
    made.push([p, format]);
    return p;
  };
  for (const type of ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'vmfs']) await make(`${type}.vmdk`, 'vmdk', type);
  await make('dyn.vdi', 'vdi', 'dynamic');
  await make('fix.vdi', 'vdi', 'fixed');
  await make('dyn.vhd', 'vhd', 'dynamic');
  await make('fix.vhd', 'vhd', 'fixed');
  await make('plain.raw', 'raw');
  for (const [parent, format] of [[join(dir, 'dyn.vdi'), 'vdi'], [join(dir, 'dyn.vhd'), 'vhd'], [join(dir, 'monolithicSparse.vmdk'), 'vmdk']] as const) {
    const c = await createChild(parent);
    await c.close();
    made.push([c.path, format]);
  }
  // images from other producers
  for (const [bz2, format] of [
    ['iotest-version3.vmdk.bz2', 'vmdk'],
    ['virtualpc-dynamic.vhd.bz2', 'vhd'],
    ['hyperv2012r2-dynamic.vhd.bz2', 'vhd'],
    ['d2v-zerofilled.vhd.bz2', 'vhd'],
    ['grub_mbr.raw.bz2', 'raw'],
  ] as const) {
    if (!optionalTestdata(t, sharedTestdata(bz2), `detection of ${bz2}`)) continue;
    const out = join(dir, bz2.replace(/\.bz2$/, ''));
    await bunzip(sharedTestdata(bz2), out);
    made.push([out, format]);
  }
  for (const [i, [path, format]] of made.entries()) {
    assert.equal((await detectFormat(path)).name, format, path);
    for (const alias of ['disguised.img', 'disguised.vmdk', 'disguised.vhd', 'disguised']) {
      const copy = join(dir, `${i}-${alias}`);
      await copyFile(path, copy);
      assert.equal((await detectFormat(copy)).name, format, `${path} copied as ${alias}`);
    }
  }
});
