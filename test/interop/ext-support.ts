/**
 * The ext interop harness: build a source folder with every kind of file the reader must handle,
 * make filesystems from it with mke2fs -d (no root, no mount), and compare everything vdkit reads
 * with what debugfs (e2fsprogs) says about the same image: one debugfs run per image lists every
 * directory (`ls -p <ino>`) and stats every inode (`stat <ino>`), and one `rdump` writes every
 * file out for the content comparison.
 */
import assert from 'node:assert/strict';
import { lstat, mkdir, readFile, readlink, symlink, truncate, utimes, writeFile, link, chmod, open } from 'node:fs/promises';
import { join } from 'node:path';
import type { Filesystem, FsStat, FsTime } from '../../src/index.js';
import { describeRun, run as runTool, whichTool, type RunOptions, type RunResult } from '../helpers/tools.js';

/** run a tool by its full path when it is found outside PATH (/usr/sbin) */
export function run(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult> {
  return runTool(whichTool(cmd) ?? cmd, args, opts);
}

export interface TreeOptions {
  /** small files, spread over folders of 100 */
  smallFiles: number;
  /** entries in the one big folder that e2fsck -D turns into an htree (0: none) */
  bigDir: number;
  /** depth of the deep chain of folders */
  depth: number;
}

/** deterministic bytes for file `i` of `n` bytes */
export function contentOf(i: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  let x = (i * 2654435761) >>> 0 || 1;
  for (let k = 0; k < n; k++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[k] = x & 0xff;
  }
  return b;
}

const MiB = 1024 * 1024;

/** The source folder: small files, a deep tree, long and non-ASCII names, hard links, symlinks, a sparse file, a fifo, odd modes and times. */
export async function buildTree(root: string, opts: TreeOptions): Promise<void> {
  await mkdir(root, { recursive: true });
  for (let i = 0; i < opts.smallFiles; i++) {
    const dir = join(root, 'many', `d${Math.floor(i / 100)}`);
    if (i % 100 === 0) await mkdir(dir, { recursive: true });
    // sizes 0..~9000 bytes: empty, inline-sized, one block, several blocks
    await writeFile(join(dir, `f${i}.bin`), contentOf(i, (i * 37) % 9001));
  }
  if (opts.bigDir > 0) {
    const big = join(root, 'big');
    await mkdir(big);
    for (let i = 0; i < opts.bigDir; i++) await writeFile(join(big, `entry-with-a-longish-name-${i.toString().padStart(6, '0')}`), i % 50 === 0 ? `${i}\n` : '');
  }
  let deep = join(root, 'deep');
  for (let d = 0; d < opts.depth; d++) deep = join(deep, `level${d}`);
  await mkdir(deep, { recursive: true });
  await writeFile(join(deep, 'bottom.txt'), 'the bottom of the deep tree\n');

  const names = join(root, 'names');
  await mkdir(names);
  await writeFile(join(names, 'x'.repeat(255)), 'longest name\n');
  await writeFile(join(names, 'ñandú-日本語-😀-Ελληνικά'), 'non-ASCII name\n');
  await writeFile(join(names, 'with space and #!$'), 'odd characters\n');

  const links = join(root, 'links');
  await mkdir(links);
  await writeFile(join(links, 'target.txt'), 'linked content\n');
  await link(join(links, 'target.txt'), join(links, 'hard1'));
  await link(join(links, 'target.txt'), join(root, 'hard2-elsewhere'));
  await symlink('target.txt', join(links, 'fast'));
  await symlink(`${'../links/'.repeat(20)}target.txt`, join(links, 'slow'));
  await symlink('/deep/level0', join(links, 'absolute-dir'));
  await symlink('../names', join(links, 'relative-dir'));
  await symlink('nowhere', join(links, 'dangling'));
  await symlink('loop-b', join(links, 'loop-a'));
  await symlink('loop-a', join(links, 'loop-b'));

  // holes at the start and between data; with 1 KiB legacy maps the pieces at 30 and 70 MiB sit
  // under the double and the triple indirect block
  const sparse = join(root, 'sparse.bin');
  const fh = await open(sparse, 'w');
  await fh.write(contentOf(1, 5000), 0, 5000, 3 * MiB + 123);
  await fh.write(contentOf(2, 70000), 0, 70000, 30 * MiB);
  await fh.write(contentOf(3, 4096), 0, 4096, 70 * MiB);
  await fh.close();
  await truncate(sparse, 80 * MiB + 17);

  const modes = join(root, 'modes');
  await mkdir(modes);
  await writeFile(join(modes, 'setuid'), '#!/bin/sh\n');
  await chmod(join(modes, 'setuid'), 0o4755);
  await writeFile(join(modes, 'private'), 'secret\n');
  await chmod(join(modes, 'private'), 0o600);
  await mkdir(join(modes, 'sticky'));
  await chmod(join(modes, 'sticky'), 0o1777);
  await writeFile(join(modes, 'old'), 'from 1970\n');
  await utimes(join(modes, 'old'), 1.5, 86400.25);
  await writeFile(join(modes, 'future'), 'after 2038\n');
  await utimes(join(modes, 'future'), 4102444800.5, 4102444800.123456);
  const r = await run('mkfifo', [join(modes, 'fifo')]);
  assert.equal(r.code, 0, describeRun('mkfifo', [join(modes, 'fifo')], r));
}

/** A file of `blocks` of data fragmented into the holes left by deleting every other small file: written with debugfs after mkfs. */
export async function fragmentImage(image: string, scratch: string, bytes: number): Promise<Buffer> {
  const data = contentOf(77, bytes);
  const host = join(scratch, 'fragmented.host');
  await writeFile(host, data);
  const cmds: string[] = ['mkdir /frag'];
  for (let i = 0; i < 400; i += 2) cmds.push(`rm /many/d${Math.floor(i / 100)}/f${i}.bin`);
  cmds.push(`write ${host} /frag/fragmented.bin`);
  const file = join(scratch, 'frag.cmds');
  await writeFile(file, cmds.join('\n') + '\n');
  const r = await run('debugfs', ['-w', '-f', file, image]);
  assert.equal(r.code, 0, describeRun('debugfs', ['-w', '-f', file, image], r));
  return data;
}

/**
 * An ext4 file of `blocks` uninitialized (preallocated) blocks: small files with data are deleted
 * first so the allocator hands their blocks back, then debugfs fallocates. Returns where the
 * extents landed, for the test to prove those blocks hold old, non-zero bytes.
 */
export async function preallocate(image: string, scratch: string, blocks: number): Promise<{ blockSize: number; ranges: { physical: number; count: number }[] }> {
  const cmds = ['mkdir /prealloc-dir'];
  for (let i = 300; i < 400; i++) cmds.push(`rm /many/d3/f${i}.bin`);
  cmds.push('write /dev/null /prealloc-dir/file', `fallocate /prealloc-dir/file 0 ${blocks - 1}`);
  const file = join(scratch, 'prealloc.cmds');
  await writeFile(file, cmds.join('\n') + '\n');
  let r = await run('debugfs', ['-w', '-f', file, image]);
  assert.equal(r.code, 0, describeRun('debugfs', ['-w', '-f', file, image], r));
  const bs = Number(/Block size:\s+(\d+)/.exec((await run('debugfs', ['-R', 'stats', image])).stdout)![1]);
  r = await run('debugfs', ['-w', '-R', `sif /prealloc-dir/file size ${blocks * bs}`, image]);
  assert.equal(r.code, 0, r.stderr);
  const ex = (await run('debugfs', ['-R', 'ex /prealloc-dir/file', image])).stdout;
  const ranges = [...ex.matchAll(/(\d+)\s+-\s+\d+\s+(\d+)\s+Uninit\s*$/gm)].map((m) => ({ physical: Number(m[1]), count: Number(m[2]) }));
  assert.ok(ranges.length > 0, `uninitialized extents:\n${ex}`);
  return { blockSize: bs, ranges };
}

export interface DebugfsInode {
  ino: number;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  blockcount: number;
  times: Record<string, FsTime>;
  extents: number;
  flags: number;
}

const TYPE_NAMES: Record<string, FsStat['type']> = {
  regular: 'file',
  directory: 'dir',
  symlink: 'symlink',
  FIFO: 'fifo',
  socket: 'socket',
  'character special': 'chardev',
  'block special': 'blockdev',
};

function debugfsTime(hex: string, extraHex: string | undefined): FsTime {
  let sec = parseInt(hex, 16) | 0;
  if (extraHex === undefined) return { sec, nsec: 0 };
  const extra = parseInt(extraHex, 16);
  sec += (extra & 3) * 2 ** 32;
  return { sec, nsec: extra >>> 2 };
}

/** One debugfs run: `stat <ino>` for every inode number given. */
export async function debugfsStats(image: string, scratch: string, inos: readonly number[]): Promise<Map<number, DebugfsInode>> {
  const file = join(scratch, 'stat.cmds');
  await writeFile(file, inos.map((i) => `stat <${i}>`).join('\n') + '\n');
  const r = await run('debugfs', ['-f', file, image], { env: { ...process.env, DEBUGFS_PAGER: '__none__', PAGER: '__none__' }, maxBuffer: 512 * MiB });
  assert.equal(r.code, 0, describeRun('debugfs', ['-f', file, image], r));
  const out = new Map<number, DebugfsInode>();
  for (const block of r.stdout.split(/^(?=Inode: )/m)) {
    const head = /^Inode: (\d+)\s+Type: (.+?)\s+Mode:\s+(\d+)\s+Flags: 0x([0-9a-f]+)/.exec(block);
    if (!head) continue;
    const own = /User:\s+(\d+)\s+Group:\s+(\d+).*?Size: (\d+)/.exec(block)!;
    const links = /Links: (\d+)\s+Blockcount: (\d+)/.exec(block)!;
    const times: Record<string, FsTime> = {};
    for (const m of block.matchAll(/^\s*(a|m|c|cr)time: 0x([0-9a-f]+)(?::([0-9a-f]+))? --/gm)) times[m[1]!] = debugfsTime(m[2]!, m[3]);
    const ext = /^EXTENTS:\n(.*)$/m.exec(block);
    out.set(Number(head[1]), {
      ino: Number(head[1]),
      type: TYPE_NAMES[head[2]!] ?? head[2]!,
      mode: parseInt(head[3]!, 8),
      uid: Number(own[1]),
      gid: Number(own[2]),
      size: Number(own[3]),
      links: Number(links[1]),
      blockcount: Number(links[2]),
      times,
      extents: ext ? ext[1]!.split(', ').length : 0,
      flags: parseInt(head[4]!, 16),
    });
  }
  return out;
}

/** One debugfs run: `ls -p <ino>` for every directory; name -> inode per directory (without . and ..). */
export async function debugfsListings(image: string, scratch: string, dirs: readonly number[]): Promise<Map<number, Map<string, number>>> {
  const file = join(scratch, 'ls.cmds');
  // debugfs -f echoes each command ("debugfs: ls -p <12>"), which tells the listings apart
  await writeFile(file, dirs.map((i) => `ls -p <${i}>`).join('\n') + '\n');
  const r = await run('debugfs', ['-f', file, image], { env: { ...process.env, DEBUGFS_PAGER: '__none__', PAGER: '__none__' }, maxBuffer: 512 * MiB });
  assert.equal(r.code, 0, describeRun('debugfs', ['-f', file, image], r));
  const out = new Map<number, Map<string, number>>();
  let current: Map<string, number> | undefined;
  for (const line of r.stdout.split('\n')) {
    const cmd = /^debugfs: ls -p <(\d+)>/.exec(line);
    if (cmd) {
      current = new Map();
      out.set(Number(cmd[1]), current);
      continue;
    }
    const m = /^\/(\d+)\/(\d+)\/(\d+)\/(\d+)\/(.*)\/(\d*)\/$/.exec(line);
    if (!m || !current) continue;
    if (m[5] === '.' || m[5] === '..' || m[1] === '0') continue;
    current.set(m[5]!, Number(m[1]));
  }
  return out;
}

export interface Walked {
  path: string;
  stat: FsStat;
}

/** Every inode reachable from the root, each once (hard links: the first path found), breadth first. */
export async function walk(fs: Filesystem): Promise<{ byIno: Map<number, Walked>; dirs: Map<number, Map<string, number>> }> {
  const byIno = new Map<number, Walked>();
  const dirs = new Map<number, Map<string, number>>();
  const queue: Walked[] = [{ path: '/', stat: await fs.stat('/') }];
  byIno.set(fs.rootIno, queue[0]!);
  while (queue.length > 0) {
    const d = queue.shift()!;
    const entries = await fs.readdirIno(d.stat.ino);
    const names = new Map<string, number>();
    dirs.set(d.stat.ino, names);
    for (const e of entries) {
      names.set(e.name, e.ino);
      if (byIno.has(e.ino)) continue;
      const path = d.path === '/' ? `/${e.name}` : `${d.path}/${e.name}`;
      const w = { path, stat: await fs.statIno(e.ino) };
      assert.equal(e.type, w.stat.type, `${path}: directory entry type vs inode type`);
      byIno.set(e.ino, w);
      if (w.stat.type === 'dir') queue.push(w);
    }
  }
  return { byIno, dirs };
}

/** Read a whole file through the path API in pieces of `chunk` bytes (not block-aligned on purpose). */
export async function readAll(fs: Filesystem, ino: number, size: number, chunk = 1_000_003): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let at = 0; at < size; at += chunk) parts.push(await fs.readIno(ino, at, Math.min(chunk, size - at)));
  return Buffer.concat(parts);
}

export interface CompareCounts {
  inodes: number;
  dirs: number;
  files: number;
  symlinks: number;
  bytes: number;
}

/**
 * Everything vdkit reads from `fs` against debugfs and rdump on `image` (a raw image of the same
 * filesystem): the listing of every directory, and every inode's type, mode, owner, size, link
 * count, allocated bytes, times, and content (files) or target (symlinks).
 */
export async function compareWithDebugfs(fs: Filesystem, image: string, scratch: string): Promise<CompareCounts> {
  await mkdir(scratch, { recursive: true });
  const { byIno, dirs } = await walk(fs);
  const theirDirs = await debugfsListings(image, scratch, [...dirs.keys()]);
  for (const [ino, names] of dirs) {
    const theirs = theirDirs.get(ino);
    assert.ok(theirs, `debugfs listed directory ${ino} (${byIno.get(ino)!.path})`);
    assert.deepEqual(new Map([...names].sort()), new Map([...theirs].sort()), `listing of ${byIno.get(ino)!.path}`);
  }
  const theirStats = await debugfsStats(image, scratch, [...byIno.keys()]);
  const counts: CompareCounts = { inodes: 0, dirs: 0, files: 0, symlinks: 0, bytes: 0 };
  for (const [ino, w] of byIno) {
    const s = w.stat;
    const d = theirStats.get(ino);
    assert.ok(d, `debugfs stat of ${w.path}`);
    const what = `${w.path} (inode ${ino})`;
    assert.equal(s.type, d.type, `${what}: type`);
    assert.equal(s.mode, d.mode, `${what}: mode`);
    assert.equal(s.uid, d.uid, `${what}: uid`);
    assert.equal(s.gid, d.gid, `${what}: gid`);
    assert.equal(s.size, d.size, `${what}: size`);
    assert.equal(s.nlink, d.links, `${what}: links`);
    assert.equal(s.allocated, d.blockcount * 512, `${what}: allocated bytes`);
    assert.deepEqual(s.mtime, d.times.m, `${what}: mtime`);
    assert.deepEqual(s.atime, d.times.a, `${what}: atime`);
    assert.deepEqual(s.ctime, d.times.c, `${what}: ctime`);
    assert.deepEqual(s.crtime, d.times.cr, `${what}: crtime`);
    counts.inodes++;
    if (s.type === 'dir') counts.dirs++;
  }
  // contents: rdump writes the tree out as debugfs reads it
  const dump = join(scratch, 'rdump');
  await mkdir(dump);
  const r = await run('debugfs', ['-R', `rdump / ${dump}`, image], { maxBuffer: 64 * MiB });
  assert.equal(r.code, 0, describeRun('debugfs', ['-R', `rdump / ${dump}`, image], r));
  for (const [ino, w] of byIno) {
    const host = join(dump, w.path);
    if (w.stat.type === 'file') {
      const ours = await readAll(fs, ino, w.stat.size);
      let theirs = await readFile(host);
      // debugfs 1.47 dumps an inline-data file's whole inline area (60 bytes and more) whatever
      // i_size says; its own stat gives the size, so only the bytes past it are cut
      if (theirStats.get(ino)!.flags & 0x10000000 && theirs.length > w.stat.size) theirs = theirs.subarray(0, w.stat.size);
      assert.equal(ours.length, theirs.length, `${w.path}: length read`);
      assert.ok(ours.equals(theirs), `${w.path}: content differs from debugfs rdump`);
      counts.files++;
      counts.bytes += ours.length;
    } else if (w.stat.type === 'symlink') {
      assert.equal(await fs.readlinkIno(ino), await readlink(host), `${w.path}: symlink target`);
      assert.equal((await lstat(host)).isSymbolicLink(), true);
      counts.symlinks++;
    }
  }
  return counts;
}
