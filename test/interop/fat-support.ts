/**
 * The FAT interop harness: a source folder with what a FAT reader must handle (long and
 * non-ASCII names, a deep tree, a big folder, empty files, files over many clusters, exact
 * even-second mtimes), images made from it with mkfs.fat and mcopy (mtools, run with TZ=UTC so
 * the local times FAT stores are the UTC times vdkit reports), a fragmented file made by
 * deleting every other small file, and `mdir -/ -a` parsed into listings to compare with.
 */
import assert from 'node:assert/strict';
import { mkdir, open, readFile, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Filesystem, FsStat } from '../../src/index.js';
import { describeRun } from '../helpers/tools.js';
import { contentOf, run } from './ext-support.js';

/** mtools with UTC times, UTF-8 names and no geometry sanity checks */
export const MTOOLS_ENV = { ...process.env, TZ: 'UTC', LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8', MTOOLS_SKIP_CHECK: '1' };

export async function mtool(cmd: string, args: readonly string[]): Promise<string> {
  const r = await run(cmd, args, { env: MTOOLS_ENV });
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r.stdout;
}

export interface FatTreeOptions {
  /** entries in /big (mostly empty files) */
  bigDir: number;
  /** depth of /deep/level0/level1/... */
  depth: number;
  /** files of several clusters in /data */
  dataFiles: number;
}

/** an even-second time from 1980 to 2107 for file `i` (FAT keeps 2-second mtimes) */
export function timeOf(i: number): number {
  return Date.UTC(1981 + ((i * 7) % 120), i % 12, 1 + (i % 28), (i * 5) % 24, (i * 13) % 60, ((i * 17) % 30) * 2) / 1000;
}

export const NAMES = ['A Long File Name With Spaces.txt', 'ñandú-日本語-Ελληνικά.txt', 'MiXeD.CaSe', 'lower.txt', 'UPPER.TXT', 'dots.in.the.name.tar.gz', 'x'.repeat(200)];

export async function buildFatTree(root: string, opts: FatTreeOptions): Promise<void> {
  await mkdir(root, { recursive: true });
  let n = 0;
  const put = async (path: string, data: Buffer | string) => {
    await writeFile(path, data);
    const t = timeOf(n++);
    await utimes(path, t, t);
  };
  for (const [i, name] of NAMES.entries()) await put(join(root, name), `name ${i}\n`);
  await put(join(root, 'empty'), '');
  await put(join(root, 'empty.dat'), '');
  const data = join(root, 'data');
  await mkdir(data);
  for (let i = 0; i < opts.dataFiles; i++) await put(join(data, `file${i}.bin`), contentOf(i + 1, 1000 + i * 9973));
  let deep = join(root, 'deep');
  for (let d = 0; d < opts.depth; d++) deep = join(deep, `level${d}`);
  await mkdir(deep, { recursive: true });
  await put(join(deep, 'bottom.txt'), 'the bottom of the deep tree\n');
  if (opts.bigDir > 0) {
    const big = join(root, 'big');
    await mkdir(big);
    // six unique leading characters: mtools' short-name search is quadratic in clashes of those
    for (let i = 0; i < opts.bigDir; i++) await put(join(big, `${String(i).padStart(6, '0')} entry with a long name`), i % 100 === 0 ? `${i}\n` : '');
  }
}

export interface MkfatOptions {
  fatBits: 12 | 16 | 32;
  /** bytes (a floppy: 1474560) */
  size: number;
  label?: string;
  /** mkfs.fat -s */
  sectorsPerCluster?: number;
}

/** mkfs.fat an image of `size` bytes and mcopy the contents of `src` (when given) into its root (times kept) */
export async function makeFat(image: string, src: string | undefined, o: MkfatOptions): Promise<void> {
  await writeFile(image, '');
  const r = await run('truncate', ['-s', String(o.size), image]);
  assert.equal(r.code, 0, r.stderr);
  const args = ['-F', String(o.fatBits), ...(o.label ? ['-n', o.label] : []), ...(o.sectorsPerCluster ? ['-s', String(o.sectorsPerCluster)] : []), image];
  const m = await run('mkfs.fat', args);
  assert.equal(m.code, 0, describeRun('mkfs.fat', args, m));
  const entries = src === undefined ? [] : await readdir(src);
  if (entries.length > 0) await mtool('mcopy', ['-s', '-m', '-i', image, ...entries.map((e) => join(src!, e)), '::/']);
}

/**
 * A fragmented file: `count` small files copied in, every other one deleted, then a file of
 * `bytes` written into the gaps. Returns its content; asserts mshowfat shows several runs.
 */
export async function fragment(image: string, scratch: string, count: number, bytes: number): Promise<Buffer> {
  const dir = join(scratch, 'frag-src');
  await mkdir(dir, { recursive: true });
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    names.push(join(dir, `s${i}`));
    await writeFile(names[i]!, contentOf(500 + i, 700));
  }
  await mtool('mmd', ['-i', image, '::/frag']);
  await mtool('mcopy', ['-i', image, ...names, '::/frag/']);
  await mtool('mdel', ['-i', image, ...names.filter((_, i) => i % 2 === 0).map((p) => `::/frag/${p.slice(dir.length + 1)}`)]);
  // FAT32: mtools allocates from FSInfo's next-free hint, past the gaps; point it at the start
  const fh = await open(image, 'r+');
  const boot = Buffer.alloc(512);
  await fh.read(boot, 0, 512, 0);
  if (boot.readUInt16LE(22) === 0) {
    const hint = Buffer.alloc(4);
    hint.writeUInt32LE(2);
    await fh.write(hint, 0, 4, boot.readUInt16LE(48) * boot.readUInt16LE(11) + 492);
  }
  await fh.close();
  const data = contentOf(4242, bytes);
  const host = join(scratch, 'fragmented.bin');
  await writeFile(host, data);
  await mtool('mcopy', ['-i', image, host, '::/frag/fragmented.bin']);
  const fat = await mtool('mshowfat', ['-i', image, '::/frag/fragmented.bin']);
  assert.ok((fat.match(/</g) ?? []).length > 2, `fragmented.bin is in several pieces: ${fat}`);
  return data;
}

export interface MdirEntry {
  name: string;
  dir: boolean;
  size: number;
  /** yyyy-mm-dd hh:mm */
  minute: string;
}

/** `mdir -/ -a` parsed: directory path ('/' , '/a/b') → entries without `.` and `..` */
export async function mdirListing(image: string): Promise<Map<string, MdirEntry[]>> {
  const text = await mtool('mdir', ['-/', '-a', '-i', image, '::/']);
  const out = new Map<string, MdirEntry[]>();
  let cur: MdirEntry[] | undefined;
  for (const line of text.split('\n')) {
    const head = /^Directory for ::(\/.*)$/.exec(line);
    if (head) {
      cur = [];
      out.set(head[1]!, cur);
      continue;
    }
    const m = /^(.{8}) (.{3}) +(<DIR>|\d+) +(\d{4}-\d\d-\d\d) +(\d{1,2}):(\d\d) (?: (.*))?$/.exec(line);
    if (!m || !cur) continue;
    const base = m[1]!.trimEnd();
    const ext = m[2]!.trimEnd();
    if (base === '.' || base === '..') continue;
    const short = ext === '' ? base : `${base}.${ext}`;
    cur.push({ name: m[7] ? m[7] : short, dir: m[3] === '<DIR>', size: m[3] === '<DIR>' ? 0 : Number(m[3]), minute: `${m[4]} ${m[5]!.padStart(2, '0')}:${m[6]}` });
  }
  return out;
}

export const minuteOf = (sec: number) => new Date(sec * 1000).toISOString().slice(0, 16).replace('T', ' ');

export interface FatCompareCounts {
  dirs: number;
  files: number;
  bytes: number;
}

/**
 * Walk `fs` and compare every directory with `mdir -/ -a` (the same names, sizes, directory
 * flags and minute-precision mtimes) and every file's bytes with what `mcopy -s` wrote out.
 */
export async function compareWithMtools(fs: Filesystem, image: string, scratch: string): Promise<FatCompareCounts> {
  const listing = await mdirListing(image);
  const out = join(scratch, `mcopy-out-${Math.random().toString(36).slice(2)}`);
  await mkdir(out);
  await mtool('mcopy', ['-s', '-n', '-i', image, '::/*', out]);
  const counts: FatCompareCounts = { dirs: 0, files: 0, bytes: 0 };
  const visit = async (path: string, st: FsStat): Promise<void> => {
    counts.dirs++;
    const want = listing.get(path);
    assert.ok(want, `mdir lists ${path}`);
    const got = await fs.readdirIno(st.ino);
    assert.deepEqual(got.map((e) => e.name).sort(), want.map((e) => e.name).sort(), `names in ${path}`);
    const byName = new Map(want.map((e) => [e.name, e]));
    for (const e of got) {
      const w = byName.get(e.name)!;
      const child = path === '/' ? `/${e.name}` : `${path}/${e.name}`;
      const cst = await fs.statIno(e.ino);
      assert.equal(cst.type, w.dir ? 'dir' : 'file', `${child}: type`);
      assert.equal(minuteOf(cst.mtime.sec), w.minute, `${child}: mtime`);
      if (w.dir) {
        await visit(child, cst);
        continue;
      }
      assert.equal(cst.size, w.size, `${child}: size`);
      const host = await readFile(join(out, ...child.split('/').filter(Boolean)));
      const mine = cst.size === 0 ? Buffer.alloc(0) : await fs.readIno(e.ino, 0, cst.size);
      assert.ok(mine.equals(host), `${child}: content equals mcopy's`);
      counts.files++;
      counts.bytes += cst.size;
    }
  };
  await visit('/', await fs.stat('/'));
  assert.equal(counts.dirs, listing.size, 'every directory mdir lists was visited');
  return counts;
}

/** every file under `src` (host) has the same bytes and (even-second) mtime in `fs` at the same path */
export async function compareWithSource(fs: Filesystem, src: string, under = '/'): Promise<number> {
  let n = 0;
  for (const name of await readdir(src)) {
    const host = join(src, name);
    const path = under === '/' ? `/${name}` : `${under}/${name}`;
    const hs = await stat(host);
    const st = await fs.stat(path);
    if (hs.isDirectory()) {
      assert.equal(st.type, 'dir', path);
      n += await compareWithSource(fs, host, path);
      continue;
    }
    assert.equal(st.size, hs.size, `${path}: size`);
    assert.equal(st.mtime.sec, Math.floor(hs.mtimeMs / 1000), `${path}: mtime`);
    const mine = hs.size === 0 ? Buffer.alloc(0) : await fs.read(path, 0, hs.size);
    assert.ok(mine.equals(await readFile(host)), `${path}: content`);
    n++;
  }
  return n;
}
