/**
 * The FAT reader against mtools: FAT12 (a 1.44 MB floppy), FAT16 and FAT32 images made by
 * mkfs.fat and filled by mcopy, every directory compared with `mdir -/ -a` and every file with
 * what `mcopy -s` copies out, and with the source folder (bytes and exact mtimes); a fragmented
 * file; a read-only file's mode; the same filesystem through a qcow2 and as partition 1 of an
 * MBR disk (sfdisk), opened by openFilesystem and by `vdkit ls/cat/stat IMAGE:1`.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk, openFat, openFilesystem } from '../../src/index.js';
import { describeRun, repoRoot, runVdkit, skipUnless, tmpDir, whichTool } from '../helpers/tools.js';
import { run } from './ext-support.js';
import { buildFatTree, compareWithMtools, compareWithSource, fragment, makeFat, mtool, timeOf } from './fat-support.js';

async function withImage<T>(path: string, fn: (fs: Awaited<ReturnType<typeof openFilesystem>>) => Promise<T>): Promise<T> {
  const disk = await Disk.open(path, { readOnly: true });
  try {
    return await fn(await openFilesystem(disk, { name: path }));
  } finally {
    await disk.close();
  }
}

for (const spec of [
  { fatBits: 12, size: 1474560, tree: { bigDir: 150, depth: 8, dataFiles: 6 }, label: 'FLOPPY' },
  { fatBits: 16, size: 48 * 1024 * 1024, tree: { bigDir: 2000, depth: 20, dataFiles: 30 }, label: 'SIXTEEN' },
  { fatBits: 32, size: 64 * 1024 * 1024, tree: { bigDir: 2000, depth: 20, dataFiles: 30 }, label: 'THIRTYTWO', sectorsPerCluster: 1 },
] as const) {
  test(`FAT${spec.fatBits}: every listing, size, mtime and byte equals mdir / mcopy and the source folder`, async (t) => {
    if (!skipUnless(t, 'mkfs.fat', 'mcopy', 'mdir', 'mattrib', 'mshowfat', 'mdel', 'mmd')) return;
    const dir = (await tmpDir(t, `vdkit-fat${spec.fatBits}-`)).path;
    const src = join(dir, 'src');
    await buildFatTree(src, spec.tree);
    const img = join(dir, 'fs.img');
    await makeFat(img, src, { fatBits: spec.fatBits, size: spec.size, label: spec.label, ...('sectorsPerCluster' in spec ? { sectorsPerCluster: spec.sectorsPerCluster } : {}) });
    const fragmented = await fragment(img, dir, 24, spec.fatBits === 12 ? 9000 : 60000);
    await mtool('mattrib', ['-i', img, '+r', '::/lower.txt']);

    await withImage(img, async (fs) => {
      const sf = fs.statfs();
      assert.equal(sf.type, 'vfat');
      assert.deepEqual(sf.features, [`FAT${spec.fatBits}`], 'the type by cluster count agrees with mkfs.fat -F');
      assert.equal(sf.label, spec.label);
      assert.deepEqual(sf.warnings, []);
      const blkid = await run('blkid', ['-p', '-o', 'export', img]);
      if (blkid.code === 0) {
        assert.match(blkid.stdout, new RegExp(`^UUID=${sf.uuid}$`, 'm'), 'serial as blkid prints it');
      }
      const counts = await compareWithMtools(fs, img, dir);
      assert.ok(counts.files >= spec.tree.bigDir + spec.tree.dataFiles, `files compared: ${counts.files}`);
      assert.ok(counts.dirs >= spec.tree.depth + 3);
      t.diagnostic(`FAT${spec.fatBits}: ${counts.dirs} directories, ${counts.files} files, ${counts.bytes} bytes equal mdir/mcopy`);
      assert.equal(await compareWithSource(fs, src), spec.tree.bigDir + spec.tree.dataFiles + 10);
      assert.ok((await fs.read('/frag/fragmented.bin', 0, fragmented.length)).equals(fragmented), 'the fragmented file reads whole');
      // reads that start and end inside clusters of the fragmented file
      const piece = await fs.read('/frag/fragmented.bin', 1234, 5555);
      assert.ok(piece.equals(fragmented.subarray(1234, 1234 + 5555)));

      assert.equal((await fs.stat('/lower.txt')).mode, 0o444, 'read-only attribute: no write bits');
      assert.equal((await fs.stat('/UPPER.TXT')).mode, 0o644);
      assert.equal((await fs.stat('/deep')).mode, 0o755);
      // FAT is case-insensitive; the 8.3 alias finds the long name's file too
      const st = await fs.stat('/a long file name with spaces.TXT');
      assert.equal(st.ino, (await fs.stat('/A Long File Name With Spaces.txt')).ino);
      assert.equal(st.mtime.sec, timeOf(0));
      const alias = (await mtool('mdir', ['-a', '-i', img, '::/A Long File Name With Spaces.txt'])).match(/^(\S+)\s+(\S+)\s+\d+/m)!;
      assert.equal((await fs.stat(`/${alias[1]}.${alias[2]}`)).ino, st.ino, `alias ${alias[1]}.${alias[2]}`);
      await assert.rejects(fs.stat('/nope'), { code: 'FILENOTFOUND' });
      await assert.rejects(fs.readlink('/lower.txt'), { code: 'INVAL' });
    });
  });
}

test('FAT: a FAT32 volume through a qcow2 and as partition 1 of an MBR disk, by openFilesystem and the CLI', async (t) => {
  if (!skipUnless(t, 'mkfs.fat', 'mcopy', 'mdir', 'sfdisk', 'qemu-img')) return;
  const dir = (await tmpDir(t, 'vdkit-fat-part-')).path;
  const src = join(dir, 'src');
  await buildFatTree(src, { bigDir: 40, depth: 4, dataFiles: 5 });
  const img = join(dir, 'fs.img');
  await makeFat(img, src, { fatBits: 32, size: 40 * 1024 * 1024, label: 'PARTFAT' });

  const q = join(dir, 'fs.qcow2');
  let r = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', img, q]);
  assert.equal(r.code, 0, r.stderr);
  await withImage(q, async (fs) => {
    await compareWithMtools(fs, img, dir);
    assert.equal((await compareWithSource(fs, src)) > 40, true);
  });

  // an MBR disk with the volume at 1 MiB as partition 1 (type 0x0c, FAT32 LBA)
  const diskImg = join(dir, 'disk.img');
  r = await run('truncate', ['-s', String(48 * 1024 * 1024), diskImg]);
  assert.equal(r.code, 0);
  const script = `label: dos\nstart=2048, size=${(40 * 1024 * 1024) / 512}, type=c\n`;
  const part = await sfdisk(diskImg, script);
  assert.equal(part.code, 0, part.stderr);
  const fh = await open(diskImg, 'r+');
  await fh.write(await readFile(img), 0, undefined, 1024 * 1024);
  await fh.close();
  const qd = join(dir, 'disk.qcow2');
  r = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', diskImg, qd]);
  assert.equal(r.code, 0, r.stderr);

  const ok = async (args: string[]) => {
    const res = await runVdkit(args, dir);
    assert.equal(res.code, 0, describeRun('vdkit', args, res));
    return res.stdout;
  };
  const names = (await ok(['ls', `${qd}:1`, '/'])).trim().split('\n');
  assert.deepEqual(names, ['A Long File Name With Spaces.txt', 'MiXeD.CaSe', 'UPPER.TXT', 'big', 'data', 'deep', 'dots.in.the.name.tar.gz', 'empty', 'empty.dat', 'lower.txt', 'x'.repeat(200), 'ñandú-日本語-Ελληνικά.txt']);
  assert.equal(await ok(['ls', `${qd}:PARTFAT`, '/deep/level0/level1/level2/level3']), 'bottom.txt\n', 'by filesystem label');
  assert.equal(await ok(['cat', `${qd}:1`, '/ñandú-日本語-Ελληνικά.txt']), 'name 1\n');
  const data = await readFile(join(src, 'data', 'file4.bin'));
  const want = createHash('sha256').update(data).digest('hex');
  const piped = await run('sh', ['-c', `"${process.execPath}" "${join(repoRoot(), 'bin', 'vdkit.js')}" cat "${qd}:1" /DATA/FILE4.BIN | sha256sum`]);
  assert.equal(piped.stdout.split(' ')[0], want, 'binary content through cat, upper-case path');
  const statText = await ok(['stat', `${qd}:1`, '/data/file4.bin']);
  assert.match(statText, new RegExp(`^  Size: ${data.length}\\s+Blocks: \\d+\\s+IO Block: 512\\s+regular file$`, 'm'));
  assert.match(statText, new RegExp(`^Modify: ${new Date((await stat(join(src, 'data', 'file4.bin'))).mtimeMs).toISOString().replace('T', ' ').replace(/\.\d+Z$/, '')}\\.000000000 \\+0000$`, 'm'));
  assert.match(statText, /^Access: \(0644\/-rw-r--r--\)/m);
  const js = JSON.parse(await ok(['stat', `${qd}:1`, '/data', '--json'])) as { type: string; mode: number; filesystem: string };
  assert.deepEqual([js.type, js.mode, js.filesystem], ['dir', 0o755, 'vfat']);

  // the library: openFat over the partition's bytes gives the same as openFilesystem
  const disk = await Disk.open(qd, { readOnly: true });
  try {
    const { listVolumes, volumeSource } = await import('../../src/index.js');
    const { volumes } = await listVolumes(disk);
    const v = volumes.find((x) => x.id === '1')!;
    assert.equal(v.content?.type, 'vfat');
    const fs = await openFat(volumeSource(disk, v));
    assert.equal((await fs.read('/data/file4.bin', 0, data.length)).equals(data), true);
  } finally {
    await disk.close();
  }
});

/** sfdisk reading its script from stdin */
async function sfdisk(image: string, script: string): Promise<{ code: number; stderr: string }> {
  const { spawn } = await import('node:child_process');
  return new Promise((resolve) => {
    const p = spawn(whichTool('sfdisk') ?? 'sfdisk', ['--no-reread', '--no-tell-kernel', image], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code: code ?? 1, stderr }));
    p.stdin.end(script);
  });
}
