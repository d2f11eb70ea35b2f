/**
 * ext2 filesystems made by someone else (dfvfs's and plaso's test images, ../shared/testdata/wild),
 * in qcow2, VMDK and VHD: each is opened through the Disk API as the byte source, and every
 * listing, inode and byte is compared with debugfs on the raw image qemu-img converts it to.
 * Images holding the same raw content (same SHA-256 in the README) must also read the same.
 */
import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { Disk, openFilesystem } from '../../src/index.js';
import { bunzip, haveTestdata, repoRoot, skipUnless, tmpDir, describeRun } from '../helpers/tools.js';
import { compareWithDebugfs, run, walk } from './ext-support.js';

const wild = (name: string) => resolve(repoRoot(), '..', 'shared', 'testdata', 'wild', name);

const IMAGES = [
  { file: 'dfvfs-4d230b4-ext2.qcow2.bz2', format: 'qcow2', same: 'ext2-4m' },
  { file: 'dfvfs-b549aa4-ext2.vmdk.bz2', format: 'vmdk', same: 'ext2-4m' },
  { file: 'dfvfs-67b5923-ext2.vhd.bz2', format: 'vpc', same: 'vhd' },
  { file: 'dfvfs-ecc8bd6-image.vmdk.bz2', format: 'vmdk', same: 'plaso' },
  { file: 'ronin-plaso_image.vmdk.bz2', format: 'vmdk', same: 'plaso' },
  { file: 'dfvfs-8a52c93-image.qcow2.bz2', format: 'qcow2', same: 'image-qcow2' },
] as const;

test('ext2 images from the wild read as debugfs reads them, in every container', async (t) => {
  if (!skipUnless(t, 'bunzip2', 'qemu-img', 'debugfs') || !haveTestdata(t, ...IMAGES.map((i) => wild(i.file)))) return;
  const dir = (await tmpDir(t, 'vdkit-ext-wild-')).path;
  const listings = new Map<string, string>();
  for (const im of IMAGES) {
    const img = join(dir, im.file.replace(/\.bz2$/, ''));
    await bunzip(wild(im.file), img);
    const raw = `${img}.raw`;
    const args = ['convert', '-f', im.format, '-O', 'raw', img, raw];
    const r = await run('qemu-img', args);
    assert.equal(r.code, 0, describeRun('qemu-img', args, r));
    const disk = await Disk.open(img, { readOnly: true });
    try {
      const fs = await openFilesystem(disk, { name: img });
      assert.equal(fs.statfs().type, 'ext2', im.file);
      const counts = await compareWithDebugfs(fs, raw, join(dir, `${im.file}.scratch`));
      t.diagnostic(`${im.file}: ${counts.inodes} inodes, ${counts.files} files, ${counts.bytes} bytes equal debugfs`);
      assert.ok(counts.files > 0, `${im.file} holds files`);
      const { byIno } = await walk(fs);
      const listing = JSON.stringify([...byIno.values()].map((w) => [w.path, w.stat.size, w.stat.mtime.sec]).sort());
      const before = listings.get(im.same);
      if (before) assert.equal(listing, before, `${im.file} reads as the other image with its content`);
      listings.set(im.same, listing);
    } finally {
      await disk.close();
    }
  }
});
