/**
 * The ext reader against e2fsprogs: filesystems made by mke2fs -d from a folder built here
 * (thousands of small files, a deep tree, long and non-ASCII names, hard links, fast and slow
 * symlinks, a sparse file reaching the triple indirect block, a fifo, odd modes and times),
 * some turned into htree directories by e2fsck -D and given a fragmented file by debugfs, then
 * every listing, inode and byte compared with debugfs (ext-support.ts). Each layout the reader
 * has a branch for gets one image: ext4 4 KiB/64bit, ext4 1 KiB/32-bit descriptors/meta_bg,
 * ext4 inline_data, ext2 with 128-byte inodes and legacy maps, ext3 with a journal. The first
 * is read again through a qcow2 that qemu-img converted it to, via the Disk API.
 */
import assert from 'node:assert/strict';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk, DiskError, openExt, openFilesystem, type Filesystem } from '../../src/index.js';
import { describeRun, skipUnless, tmpDir } from '../helpers/tools.js';
import { buildTree, compareWithDebugfs, debugfsStats, fragmentImage, preallocate, run, type TreeOptions } from './ext-support.js';

interface Variant {
  name: string;
  mkfs: string;
  args: string[];
  size: string;
  tree: TreeOptions;
  type: 'ext2' | 'ext3' | 'ext4';
  /** e2fsck -D: index every directory big enough (htree) */
  htree?: boolean;
  /** a file written by debugfs into the holes of deleted files */
  fragment?: number;
  /** blocks of a preallocated (uninitialized-extent) file over deleted files' blocks */
  prealloc?: number;
  qcow2?: boolean;
}

const VARIANTS: Variant[] = [
  {
    name: 'ext4, 4 KiB blocks, 64bit, htree directory of 5000, fragmented file',
    mkfs: 'mkfs.ext4',
    args: ['-b', '4096', '-O', '64bit', '-N', '12000'],
    size: '160M',
    tree: { smallFiles: 2000, bigDir: 5000, depth: 40 },
    type: 'ext4',
    htree: true,
    fragment: 3 * 1024 * 1024,
    prealloc: 64,
    qcow2: true,
  },
  {
    name: 'ext4, 1 KiB blocks, 32-bit descriptors, meta_bg over 120 groups',
    mkfs: 'mkfs.ext4',
    args: ['-b', '1024', '-g', '1024', '-O', '^64bit,meta_bg,^resize_inode', '-N', '2000'],
    size: '120M',
    tree: { smallFiles: 400, bigDir: 800, depth: 12 },
    type: 'ext4',
    htree: true,
    fragment: 600 * 1024,
  },
  {
    name: 'ext4 with inline_data',
    mkfs: 'mkfs.ext4',
    args: ['-b', '4096', '-I', '256', '-O', 'inline_data'],
    size: '120M',
    tree: { smallFiles: 300, bigDir: 0, depth: 6 },
    type: 'ext4',
  },
  {
    name: 'ext2, 1 KiB blocks, 128-byte inodes, no filetype in directory entries, legacy block maps up to the triple indirect block',
    mkfs: 'mkfs.ext2',
    args: ['-b', '1024', '-I', '128', '-O', '^filetype'],
    size: '120M',
    tree: { smallFiles: 300, bigDir: 600, depth: 10 },
    type: 'ext2',
    htree: true,
  },
  {
    name: 'ext3, 4 KiB blocks, journal',
    mkfs: 'mkfs.ext3',
    args: ['-b', '4096'],
    size: '120M',
    tree: { smallFiles: 300, bigDir: 300, depth: 8 },
    type: 'ext3',
    fragment: 400 * 1024,
  },
];

const UUID = '0d5a1b2c-3e4f-4a5b-8c6d-7e8f9a0b1c2d';

async function ok(cmd: string, args: string[], okCodes = [0]): Promise<void> {
  const r = await run(cmd, args);
  assert.ok(okCodes.includes(r.code), describeRun(cmd, args, r));
}

/** the paths that exercise the path walk: symlinks in the middle, `..` at the root, loops */
async function pathChecks(fs: Filesystem, v: Variant): Promise<void> {
  assert.equal((await fs.read('/links/fast', 0, 100)).toString(), 'linked content\n');
  assert.equal((await fs.read('/links/slow', 0, 100)).toString(), 'linked content\n');
  assert.equal((await fs.read('/links/hard1', 0, 100)).toString(), 'linked content\n');
  assert.equal((await fs.stat('/links/hard1')).ino, (await fs.stat('/hard2-elsewhere')).ino);
  assert.equal((await fs.stat('/links/hard1')).nlink, 3);
  assert.equal((await fs.stat('/links/absolute-dir')).type, 'symlink');
  assert.equal((await fs.stat('/links/absolute-dir', { follow: true })).type, 'dir');
  assert.equal((await fs.stat('/links/absolute-dir/level1', { follow: true })).type, 'dir');
  assert.deepEqual(await fs.readdir('/links/relative-dir'), await fs.readdir('/names'));
  assert.equal((await fs.stat('/../../..')).ino, fs.rootIno, '.. never leaves the root');
  assert.equal((await fs.read('/deep/level0/../../links/./target.txt', 0, 6)).toString(), 'linked');
  assert.equal((await fs.read('/names/ñandú-日本語-😀-Ελληνικά', 0, 100)).toString(), 'non-ASCII name\n');
  assert.equal((await fs.stat(`/names/${'x'.repeat(255)}`)).size, 13);
  await assert.rejects(fs.read('/links/loop-a', 0, 1), (e: unknown) => e instanceof DiskError && /symbolic links/.test(e.message));
  await assert.rejects(fs.stat('/links/dangling', { follow: true }), (e: unknown) => e instanceof DiskError && e.code === 'FILENOTFOUND');
  await assert.rejects(fs.readdir('/links/target.txt'), (e: unknown) => e instanceof DiskError && /not a directory/.test(e.message));
  await assert.rejects(fs.stat('/links/target.txt/x'), (e: unknown) => e instanceof DiskError && /not a directory/.test(e.message));
  const sparse = await fs.stat('/sparse.bin');
  // mke2fs 1.47 -d with inline_data drops a file's trailing hole (debugfs agrees, checked above)
  if (!v.args.includes('inline_data')) assert.equal(sparse.size, 80 * 1024 * 1024 + 17);
  assert.ok(sparse.allocated! < 1024 * 1024, `a sparse file of 80 MiB owns ${sparse.allocated} bytes`);
  assert.ok((await fs.read('/sparse.bin', 0, 4096)).equals(Buffer.alloc(4096)), 'a hole reads as zeros');
  assert.equal((await fs.read('/sparse.bin', sparse.size - 5, 100)).length, 5, 'a read at the end is short');
  assert.equal((await fs.read('/sparse.bin', sparse.size + 5, 100)).length, 0, 'a read past the end is empty');
  assert.equal((await fs.stat('/modes/old')).mtime.sec, 86400);
  if (!v.args.join(' ').includes('-I 128')) {
    // 256-byte inodes: nanoseconds and the epoch bits that carry times past 2038
    const future = await fs.stat('/modes/future');
    assert.equal(future.mtime.sec, 4102444800);
    assert.equal(future.mtime.nsec, 123456000);
  }
  assert.equal((await fs.stat('/modes/fifo')).type, 'fifo');
  assert.equal((await fs.stat('/modes/setuid')).mode, 0o4755);
  assert.equal((await fs.stat('/modes/sticky')).mode, 0o1777);
}

for (const v of VARIANTS) {
  test(`ext reader = debugfs: ${v.name}`, async (t) => {
    if (!skipUnless(t, v.mkfs, 'debugfs', 'e2fsck', 'mkfifo', ...(v.qcow2 ? ['qemu-img'] : []))) return;
    const dir = (await tmpDir(t, 'vdkit-ext-')).path;
    const src = join(dir, 'src');
    await buildTree(src, v.tree);
    const img = join(dir, 'fs.img');
    await ok(v.mkfs, ['-q', '-F', '-L', 'vdkit-test', '-U', UUID, ...v.args, '-d', src, img, v.size]);
    // e2fsck exits 1 when it changed something (it did: -D rebuilt the directories)
    if (v.htree) await ok('e2fsck', ['-f', '-y', '-D', img], [0, 1]);
    const bigInodes = !v.args.join(' ').includes('-I 128');
    // mke2fs -d stores whole seconds only; give one file nanoseconds and the epoch bit that
    // carries 2100-01-01 (0xf4865700 is negative as 32 bits): nsec 123456000 << 2 | 1
    if (bigInodes) await ok('debugfs', ['-w', '-R', 'sif /modes/future mtime_extra 0x1d6f2801', img]);
    const fragmented = v.fragment ? await fragmentImage(img, dir, v.fragment) : undefined;
    const prealloc = v.prealloc ? await preallocate(img, dir, v.prealloc) : undefined;

    const disk = await Disk.open(img, { readOnly: true, format: 'raw' });
    t.after(() => disk.close());
    const fs = await openExt(disk, { name: img });
    const info = fs.statfs();
    assert.equal(info.type, v.type);
    assert.equal(info.label, 'vdkit-test');
    assert.equal(info.uuid, UUID);
    assert.deepEqual(info.warnings, []);
    const counts = await compareWithDebugfs(fs, img, dir);
    t.diagnostic(`${counts.inodes} inodes (${counts.dirs} directories, ${counts.files} files, ${counts.symlinks} symlinks, ${counts.bytes} bytes) equal debugfs`);
    assert.ok(counts.files >= v.tree.smallFiles / 2 + 10, `files compared: ${counts.files}`);
    await pathChecks(fs, v);

    const stats = await debugfsStats(img, dir, [(await fs.stat('/')).ino, ...(v.tree.bigDir ? [(await fs.stat('/big')).ino] : [])]);
    if (v.htree && v.tree.bigDir) {
      assert.ok((stats.get((await fs.stat('/big')).ino)!.flags & 0x1000) !== 0, '/big is an htree (INDEX_FL) directory');
      assert.equal((await fs.readdir('/big')).length, v.tree.bigDir);
    }
    if (fragmented) {
      const st = await fs.stat('/frag/fragmented.bin');
      const frag = (await debugfsStats(img, dir, [st.ino])).get(st.ino)!;
      if (v.type === 'ext4') assert.ok(frag.extents > 4, `the fragmented file has ${frag.extents} extents (more than fit in the inode)`);
      assert.ok((await fs.read('/frag/fragmented.bin', 0, fragmented.length)).equals(fragmented));
    }
    if (prealloc) {
      // the blocks hold a deleted file's bytes; an uninitialized extent must read as zeros anyway
      const bs = prealloc.blockSize;
      let nonZero = 0;
      for (const r of prealloc.ranges) if (!(await disk.read(r.physical * bs, r.count * bs)).equals(Buffer.alloc(r.count * bs))) nonZero++;
      assert.ok(nonZero > 0, 'some preallocated blocks hold old non-zero bytes on disk');
      assert.equal(prealloc.ranges.reduce((n, r) => n + r.count, 0), v.prealloc);
      const st = await fs.stat('/prealloc-dir/file');
      assert.equal(st.size, v.prealloc! * bs);
      assert.ok((await fs.read('/prealloc-dir/file', 0, st.size)).equals(Buffer.alloc(st.size)), 'an uninitialized extent reads as zeros');
    }
    if (v.type === 'ext4' && v.args.includes('inline_data')) {
      // 37 bytes fit i_block; 74 bytes spill into the system.data xattr; one-entry folders are inline too
      const inos = [(await fs.stat('/many/d0/f1.bin')).ino, (await fs.stat('/many/d0/f2.bin')).ino, (await fs.stat('/deep/level0')).ino];
      const inline = await debugfsStats(img, dir, inos);
      for (const ino of inos) assert.ok((inline.get(ino)!.flags & 0x10000000) !== 0, `inode ${ino} is inline data`);
      assert.equal((await fs.stat('/many/d0/f2.bin')).size, 74);
    }

    if (v.qcow2) {
      const q = join(dir, 'fs.qcow2');
      await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', img, q]);
      const qd = await Disk.open(q, { readOnly: true });
      t.after(() => qd.close());
      const qfs = await openFilesystem(qd, { name: q });
      assert.equal(qfs.statfs().uuid, UUID);
      const again = await compareWithDebugfs(qfs, img, join(dir, 'via-qcow2'));
      assert.deepEqual(again, counts, 'the qcow2 reads as the raw image does');
    }
  });
}

/** ext2fs_ext_attr_hash_entry: the name's bytes, then the value's 32-bit words */
function xattrHash(name: Buffer, value: Buffer): number {
  let h = 0;
  for (const c of name) h = ((h << 5) ^ (h >>> 27) ^ c) >>> 0;
  for (let i = 0; i + 4 <= value.length; i += 4) h = ((h << 16) ^ (h >>> 16) ^ value.readUInt32LE(i)) >>> 0;
  return h;
}

test('ext inline directory continued in its system.data xattr (as the kernel writes it; mke2fs never does) = debugfs', async (t) => {
  if (!skipUnless(t, 'mkfs.ext4', 'debugfs')) return;
  const dir = (await tmpDir(t, 'vdkit-ext-spill-')).path;
  const src = join(dir, 'src');
  await mkdir(join(src, 'd'), { recursive: true });
  await writeFile(join(src, 'd', 'a'), 'one\n');
  await writeFile(join(src, 'b'), 'two\n');
  const img = join(dir, 'fs.img');
  await ok('mkfs.ext4', ['-q', '-F', '-b', '1024', '-I', '256', '-O', 'inline_data,^metadata_csum', '-d', src, img, '4M']);
  const where = async (path: string) => {
    const r = await run('debugfs', ['-R', `imap ${path}`, img]);
    const m = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(r.stdout)!;
    return Number(m[1]) * 1024 + parseInt(m[2]!, 16);
  };
  const dAt = await where('/d');
  const bAt = await where('/b');
  const bIno = Number(/^\/(\d+)\//m.exec((await run('debugfs', ['-R', 'ls -p /', img])).stdout.split('\n').find((l) => l.includes('/b/'))!)![1]);
  const fh = await open(img, 'r+');
  try {
    const inode = Buffer.alloc(256);
    await fh.read(inode, 0, 256, dAt);
    assert.equal(inode.readUInt32LE(0x20) & 0x10000000, 0x10000000, '/d is an inline directory');
    const area = 128 + inode.readUInt16LE(128);
    assert.equal(inode.readUInt32LE(area), 0xea020000);
    assert.equal(inode.subarray(area + 20, area + 24).toString(), 'data', 'system.data is the first in-inode xattr');
    // one more entry, "spill" -> /b, as the 16-byte value of system.data; the directory grows to 60 + 16
    const value = Buffer.alloc(16);
    value.writeUInt32LE(bIno, 0);
    value.writeUInt16LE(16, 4);
    value.writeUInt8(5, 6);
    value.writeUInt8(1, 7);
    value.write('spill', 8);
    const offs = 256 - area - 4 - 16 - 4; // e_value_offs counts from the first entry; leave the 4-byte end marker room
    inode.writeUInt16LE(offs, area + 4 + 2);
    inode.writeUInt32LE(value.length, area + 4 + 8);
    inode.writeUInt32LE(xattrHash(Buffer.from('data'), value), area + 4 + 12);
    value.copy(inode, area + 4 + offs);
    inode.writeUInt32LE(60 + value.length, 4);
    await fh.write(inode, 0, 256, dAt);
    const b = Buffer.alloc(2);
    b.writeUInt16LE(2);
    await fh.write(b, 0, 2, bAt + 0x1a);
  } finally {
    await fh.close();
  }
  const disk = await Disk.open(img, { readOnly: true, format: 'raw' });
  t.after(() => disk.close());
  const fs = await openExt(disk);
  assert.deepEqual((await fs.readdir('/d')).map((e) => e.name).sort(), ['a', 'spill']);
  assert.equal((await fs.read('/d/spill', 0, 10)).toString(), 'two\n');
  await compareWithDebugfs(fs, img, dir);
});
