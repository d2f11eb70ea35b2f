/**
 * `vdkit copy-out` on ext4 (a tree from mke2fs -d) and FAT (mkfs.fat + mcopy): the copy equals
 * the source folder (bytes, modes, mtimes, hard links, a sparse file staying sparse); links that
 * would point out of DEST (absolute, or climbing above it) are skipped with a warning, links
 * inside are recreated; and names a crafted FAT directory holds (`..`, `../escape`, `a/b`) are
 * refused with exit status 1 while nothing lands outside DEST.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstat, mkdir, open, readFile, readdir, readlink, stat, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { describeRun, runVdkit, skipUnless, tmpDir } from '../helpers/tools.js';
import { buildTree, run } from './ext-support.js';
import { buildFatTree, makeFat, mtool } from './fat-support.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** every regular file and directory under `src` equals the one at the same place under `out` */
async function sameTree(src: string, out: string, opts: { mode: (rel: string, srcMode: number) => number; skipMtime?: Set<string> }, rel = ''): Promise<number> {
  let n = 0;
  for (const name of await readdir(join(src, rel))) {
    const r = rel === '' ? name : `${rel}/${name}`;
    const s = await lstat(join(src, r));
    if (!s.isFile() && !s.isDirectory()) continue;
    const o = await lstat(join(out, r));
    assert.equal(o.isDirectory(), s.isDirectory(), `${r}: type`);
    assert.equal(o.mode & 0o7777, opts.mode(r, s.mode & 0o7777), `${r}: mode`);
    if (!opts.skipMtime?.has(r)) assert.equal(Math.floor(o.mtimeMs / 1000), Math.floor(s.mtimeMs / 1000), `${r}: mtime`);
    if (s.isDirectory()) n += await sameTree(src, out, opts, r);
    else {
      assert.equal(o.size, s.size, `${r}: size`);
      assert.equal(sha(await readFile(join(out, r))), sha(await readFile(join(src, r))), `${r}: content`);
      n++;
    }
  }
  return n;
}

test('copy-out of an ext4 tree equals the source folder; links out of DEST and fifos are skipped', async (t) => {
  if (!skipUnless(t, 'mkfs.ext4', 'mkfifo')) return;
  const dir = (await tmpDir(t, 'vdkit-copyout-ext-')).path;
  const src = join(dir, 'src');
  await buildTree(src, { smallFiles: 120, bigDir: 0, depth: 4 });
  await symlink('/etc', join(src, 'links', 'etc'));
  const img = join(dir, 'fs.img');
  const r = await run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', src, img, '100M']);
  assert.equal(r.code, 0, r.stderr);
  const out = join(dir, 'out');
  await mkdir(out);
  const args = ['copy-out', img, '/', out];
  const res = await runVdkit(args, dir);
  assert.equal(res.code, 0, describeRun('vdkit', args, res));

  // mke2fs -d keeps whole seconds; a 2100 mtime wraps (ext NOTES.md), so /modes/future is compared by vdkit stat below
  const files = await sameTree(src, out, { mode: (_r, m) => m, skipMtime: new Set(['modes/future']) });
  assert.ok(files >= 130, `files compared: ${files}`);
  const st = await runVdkit(['stat', img, '/modes/future', '--json'], dir);
  assert.equal(Math.floor((await stat(join(out, 'modes', 'future'))).mtimeMs / 1000), Date.parse((JSON.parse(st.stdout) as { mtime: string }).mtime) / 1000);

  // links: those that stay inside are recreated as they were; the others are reported
  for (const [name, target] of [['fast', 'target.txt'], ['relative-dir', '../names'], ['dangling', 'nowhere'], ['loop-a', 'loop-b']] as const) {
    assert.equal(await readlink(join(out, 'links', name)), target, name);
  }
  for (const name of ['absolute-dir', 'etc', 'slow']) {
    await assert.rejects(lstat(join(out, 'links', name)), { code: 'ENOENT' }, `${name} not recreated`);
    assert.match(res.stderr, new RegExp(`/links/${name}: symbolic link to .* not recreated`));
  }
  await assert.rejects(lstat(join(out, 'modes', 'fifo')), { code: 'ENOENT' });
  assert.match(res.stderr, /\/modes\/fifo: fifo not copied/);
  // hard links stay hard links
  const ino = (await stat(join(out, 'links', 'target.txt'))).ino;
  assert.equal((await stat(join(out, 'links', 'hard1'))).ino, ino);
  assert.equal((await stat(join(out, 'hard2-elsewhere'))).ino, ino);
  // the sparse file stays sparse
  const sp = await stat(join(out, 'sparse.bin'));
  assert.equal(sp.size, 80 * 1024 * 1024 + 17);
  assert.ok(sp.blocks * 512 < 4 * 1024 * 1024, `sparse.bin allocates ${sp.blocks * 512} bytes`);

  // one file and one directory by path, into another DEST
  const out2 = join(dir, 'out2');
  await mkdir(out2);
  const r2 = await runVdkit(['copy-out', img, '/links/target.txt', '/deep/level0', out2], dir);
  assert.equal(r2.code, 0, r2.stderr);
  assert.deepEqual((await readdir(out2)).sort(), ['level0', 'target.txt']);
  assert.equal(await readFile(join(out2, 'level0', 'level1', 'level2', 'level3', 'bottom.txt'), 'utf8'), 'the bottom of the deep tree\n');
  const r3 = await runVdkit(['copy-out', img, '/links', join(dir, 'no-such-dir')], dir);
  assert.equal(r3.code, 1);
  assert.match(r3.stderr, /destination must be an existing directory/);
});

test('copy-out of a FAT tree equals the source folder (content, mtime, modes from the read-only attribute)', async (t) => {
  if (!skipUnless(t, 'mkfs.fat', 'mcopy', 'mattrib')) return;
  const dir = (await tmpDir(t, 'vdkit-copyout-fat-')).path;
  const src = join(dir, 'src');
  await buildFatTree(src, { bigDir: 300, depth: 6, dataFiles: 12 });
  const img = join(dir, 'fs.img');
  // 1 KiB clusters: mcopy cannot place a 17-slot long name across 512-byte clusters ("No directory slots")
  await makeFat(img, src, { fatBits: 32, size: 80 * 1024 * 1024, sectorsPerCluster: 2 });
  await mtool('mattrib', ['-i', img, '+r', '::/lower.txt']);
  const out = join(dir, 'out');
  await mkdir(out);
  const res = await runVdkit(['copy-out', img, '/', out], dir);
  assert.equal(res.code, 0, describeRun('vdkit', ['copy-out'], res));
  // FAT keeps no modes: files 0644, directories 0755, read-only files 0444; directory mtimes are mcopy's own
  const dirs = new Set<string>();
  const files = await sameTree(src, out, {
    mode: (r, m) => {
      if (m & 0o111 && (m & 0o170000) === 0) dirs.add(r);
      return r === 'lower.txt' ? 0o444 : (m & 0o111) !== 0 ? 0o755 : 0o644;
    },
    skipMtime: new Set(['data', 'deep', 'big', ...Array.from({ length: 6 }, (_, d) => ['deep', ...Array.from({ length: d + 1 }, (_x, k) => `level${k}`)].join('/'))]),
  });
  assert.equal(files, 300 + 12 + 10);
});

/** one VFAT long-name sequence plus its short entry, naming `long` (ASCII), for an empty file */
function craftedEntries(long: string, short11: string): Buffer {
  const raw = Buffer.from(short11, 'latin1');
  let sum = 0;
  for (const b of raw) sum = (((sum & 1) << 7) + (sum >> 1) + b) & 0xff;
  const units: number[] = [...long].map((c) => c.charCodeAt(0));
  if (units.length % 13 !== 0) units.push(0);
  while (units.length % 13 !== 0) units.push(0xffff);
  const pieces = units.length / 13;
  const out = Buffer.alloc(32 * (pieces + 1));
  for (let k = pieces; k >= 1; k--) {
    const e = out.subarray(32 * (pieces - k), 32 * (pieces - k + 1));
    e[0] = k | (k === pieces ? 0x40 : 0);
    e[11] = 0x0f;
    e[13] = sum;
    const u = units.slice((k - 1) * 13, k * 13);
    const at = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
    u.forEach((v, i) => e.writeUInt16LE(v, at[i]!));
  }
  const s = out.subarray(32 * pieces);
  raw.copy(s, 0);
  s[11] = 0x20;
  return out;
}

test('copy-out refuses names a crafted FAT directory holds that would escape DEST', async (t) => {
  if (!skipUnless(t, 'mkfs.fat', 'mcopy')) return;
  const dir = (await tmpDir(t, 'vdkit-copyout-escape-')).path;
  const img = join(dir, 'fs.img');
  await makeFat(img, undefined, { fatBits: 16, size: 16 * 1024 * 1024 });
  const host = join(dir, 'fine.txt');
  await (await open(host, 'w')).close();
  await mtool('mcopy', ['-i', img, host, '::/fine.txt']);
  // append crafted entries after the last used slot of the fixed root directory
  const buf = await readFile(img);
  const rootAt = (buf.readUInt16LE(14) + buf[16]! * buf.readUInt16LE(22)) * buf.readUInt16LE(11);
  let at = rootAt;
  while (buf[at] !== 0) at += 32;
  const crafted = Buffer.concat([craftedEntries('../escape.txt', 'ESCAPE1 TXT'), craftedEntries('..', 'ESCAPE2 TXT'), craftedEntries('a/b', 'ESCAPE3 TXT'), craftedEntries('.', 'ESCAPE4 TXT')]);
  const fh = await open(img, 'r+');
  await fh.write(crafted, 0, crafted.length, at);
  await fh.close();

  const ls = await runVdkit(['ls', img, '/'], dir);
  assert.equal(ls.code, 0, ls.stderr);
  for (const n of ['../escape.txt', '..', 'a/b', '.', 'fine.txt']) assert.ok(ls.stdout.split('\n').includes(n), `ls shows ${JSON.stringify(n)} as stored:\n${ls.stdout}`);

  const out = join(dir, 'deep', 'out');
  await mkdir(out, { recursive: true });
  const res = await runVdkit(['copy-out', img, '/', out], dir);
  assert.equal(res.code, 1, describeRun('vdkit', ['copy-out'], res));
  assert.match(res.stderr, /refused 4 name\(s\) that would escape/);
  assert.match(res.stderr, /holds '\/'/);
  assert.deepEqual(await readdir(out), ['fine.txt'], 'only the safe file is copied');
  assert.deepEqual((await readdir(join(dir, 'deep'))).sort(), ['out'], 'nothing written beside DEST');
  assert.deepEqual((await readdir(dir)).sort(), ['deep', 'fine.txt', 'fs.img']);
});
