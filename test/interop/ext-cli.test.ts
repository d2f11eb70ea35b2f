/**
 * `vdkit ls` and `vdkit cat` on an ext4 filesystem made by mke2fs -d and converted to qcow2 (the
 * whole disk is the filesystem): the listing equals the library's walk, -l prints what ls -l
 * would, cat streams bytes exactly, and wrong paths, directories and partitions not yet
 * resolvable are errors with exit status 1. IMAGE[:PART] splitting is checked on its own.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { test } from 'node:test';
import { splitImagePart } from '../../src/cli/inside-target.js';
import { Disk, openExt } from '../../src/index.js';
import { describeRun, repoRoot, runVdkit, skipUnless, tmpDir } from '../helpers/tools.js';
import { buildTree, contentOf, run, walk } from './ext-support.js';

test('IMAGE[:PART]: split at the last colon, not inside a URL host:port or after a drive letter', () => {
  assert.deepEqual(splitImagePart('disk.qcow2'), { image: 'disk.qcow2' });
  assert.deepEqual(splitImagePart('disk.qcow2:2'), { image: 'disk.qcow2', part: '2' });
  assert.deepEqual(splitImagePart('/x/disk.vmdk:vg0/root'), { image: '/x/disk.vmdk', part: 'vg0/root' });
  assert.deepEqual(splitImagePart('disk.img:BOOT'), { image: 'disk.img', part: 'BOOT' });
  assert.deepEqual(splitImagePart('nbd://host:10809'), { image: 'nbd://host:10809' });
  assert.deepEqual(splitImagePart('nbd://host:10809/export:1'), { image: 'nbd://host:10809/export', part: '1' });
  assert.deepEqual(splitImagePart('http://h:8080/a/b.qcow2'), { image: 'http://h:8080/a/b.qcow2' });
  assert.deepEqual(splitImagePart('C:disk.vhd'), { image: 'C:disk.vhd' });
  assert.deepEqual(splitImagePart('disk:'), { image: 'disk:' });
  assert.deepEqual(splitImagePart('a:b/c/d'), { image: 'a:b/c/d' }, 'a part has at most one /');
});

test('vdkit ls / cat on a whole-disk ext4 in a qcow2', async (t) => {
  if (!skipUnless(t, 'mkfs.ext4', 'qemu-img', 'mkfifo')) return;
  const dir = (await tmpDir(t, 'vdkit-ext-cli-')).path;
  const src = join(dir, 'src');
  await buildTree(src, { smallFiles: 150, bigDir: 0, depth: 5 });
  const raw = join(dir, 'fs.img');
  let r = await run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', src, raw, '100M']);
  assert.equal(r.code, 0, r.stderr);
  const q = join(dir, 'fs.qcow2');
  r = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, q]);
  assert.equal(r.code, 0, r.stderr);

  const disk = await Disk.open(q, { readOnly: true });
  const { byIno } = await walk(await openExt(disk));
  await disk.close();

  const ok = async (args: string[]) => {
    const res = await runVdkit(args, dir);
    assert.equal(res.code, 0, describeRun('vdkit', args, res));
    return res.stdout;
  };

  // -R --json: every path once per inode walked (hard links appear under each name)
  const rows = JSON.parse(await ok(['ls', q, '/', '-R', '--json'])) as { path: string; ino: number; size: number; type: string; mode: number; target?: string }[];
  const paths = new Set(rows.map((x) => x.path));
  for (const w of byIno.values()) if (w.path !== '/') assert.ok(paths.has(w.path), `ls -R lists ${w.path}`);
  assert.equal(new Set(rows.map((x) => x.ino)).size, byIno.size - 1, 'every inode but the root, none invented');
  for (const x of rows) {
    const w = byIno.get(x.ino)!;
    assert.equal(x.size, w.stat.size, x.path);
    assert.equal(x.type, w.stat.type, x.path);
  }
  assert.equal(rows.find((x) => x.path === '/links/fast')!.target, 'target.txt');

  const long = await ok(['ls', q, '/modes', '-l']);
  assert.match(long, /^-rwsr-xr-x 1 \d+\s+\d+\s+10 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d setuid$/m);
  assert.match(long, /^drwxrwxrwt \d+ .* sticky$/m);
  assert.match(long, /^prw-r--r-- 1 .* fifo$/m);
  assert.match(long, / 1970-01-02 00:00:00 old$/m);
  assert.equal(await ok(['ls', q, '/links']), ['absolute-dir', 'dangling', 'fast', 'hard1', 'loop-a', 'loop-b', 'relative-dir', 'slow', 'target.txt'].join('\n') + '\n');
  assert.equal(await ok(['ls', q, '/links/absolute-dir']), 'level1\n', 'a symlink to a directory is listed through');
  assert.match(await ok(['ls', q, '/links/fast', '-l']), /^lrwxrwxrwx .* fast -> target.txt$/m);

  assert.equal(await ok(['cat', q, '/links/slow']), 'linked content\n');
  // binary content through a pipe, hashed
  const want = createHash('sha256').update(contentOf(149, (149 * 37) % 9001)).digest('hex');
  const piped = await run('sh', ['-c', `"${process.execPath}" "${join(repoRoot(), 'bin', 'vdkit.js')}" cat "${q}" /many/d1/f149.bin | sha256sum`]);
  assert.equal(piped.stdout.split(' ')[0], want);

  for (const [args, code, text] of [
    [['ls', q, '/missing'], 1, /FILENOTFOUND/],
    [['cat', q, '/links'], 1, /is a directory/],
    [['cat', q, '/links/loop-a'], 1, /too many levels of symbolic links/],
    [['ls', `${q}:1`], 1, /no partition, volume or label "1"/],
  ] as const) {
    const res = await runVdkit([...args], dir);
    assert.equal(res.code, code, describeRun('vdkit', [...args], res));
    assert.match(res.stderr, text);
  }

  // IMAGE:PART: the same filesystem as partition 2 of a GPT disk (built by mkimg from the qcow2),
  // picked by number, by GPT partition name and by filesystem label
  await run('e2label', [raw, 'extroot']);
  const gpt = join(dir, 'gpt.vmdk');
  r = await runVdkit(['mkimg', '-s', 'gpt', '-p', 'efi/esp::1M', '-p', `linux-data/rootpart:=${raw}`, '--image-format', 'vmdk', '-o', gpt], dir);
  assert.equal(r.code, 0, describeRun('vdkit', ['mkimg'], r));
  const links = await ok(['ls', raw, '/links']);
  assert.equal(await ok(['ls', `${gpt}:2`, '/links']), links, 'by partition number');
  assert.equal(await ok(['ls', `${gpt}:rootpart`, '/links']), links, 'by GPT partition name');
  assert.equal(await ok(['cat', `${gpt}:extroot`, '/links/slow']), 'linked content\n', 'by filesystem label');
  const none = await runVdkit(['ls', `${gpt}:9`], dir);
  assert.equal(none.code, 1, describeRun('vdkit', ['ls'], none));
  assert.match(none.stderr, /no partition, volume or label "9" \(volumes: 1, 2 \(extroot\)\)/);
});
