/**
 * The shared path walk (src/inside/fs/path.ts) over a scripted in-memory reader: `..` stays
 * inside the root and ignores on-disk `..` entries, symlinks restart the walk (absolute ones at
 * the root), loops stop at MAX_SYMLINKS, and the errors name the component.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DiskError, FileTree, MAX_SYMLINKS, type FsDirEntry, type FsStat, type InodeReader } from '../../src/index.js';

type Node = { type: 'dir'; entries: Record<string, number> } | { type: 'file'; data: string } | { type: 'symlink'; target: string };

function reader(nodes: Record<number, Node>): InodeReader & { lookups: number } {
  const t0 = { sec: 0, nsec: 0 };
  const r = {
    rootIno: 1,
    lookups: 0,
    statfs: () => ({ type: 'test', label: '', uuid: '', blockSize: 1, blocks: 0, freeBlocks: 0, inodes: 0, freeInodes: 0, features: [], warnings: [] }),
    async statIno(ino: number): Promise<FsStat> {
      const n = nodes[ino];
      if (!n) throw new DiskError('INVAL', `no inode ${ino}`);
      const size = n.type === 'file' ? n.data.length : n.type === 'symlink' ? n.target.length : 0;
      return { ino, type: n.type, mode: 0o755, uid: 0, gid: 0, size, nlink: 1, atime: t0, mtime: t0, ctime: t0 };
    },
    async readdirIno(ino: number): Promise<FsDirEntry[]> {
      const n = nodes[ino]!;
      assert.equal(n.type, 'dir');
      return Object.entries((n as { entries: Record<string, number> }).entries).map(([name, i]) => ({ name, ino: i, type: nodes[i]!.type }));
    },
    async lookupIno(dir: number, name: string) {
      r.lookups++;
      return (nodes[dir] as { entries: Record<string, number> }).entries[name];
    },
    async readIno(ino: number, offset: number, length: number) {
      return Buffer.from((nodes[ino] as { data: string }).data).subarray(offset, offset + length);
    },
    async readlinkIno(ino: number) {
      return (nodes[ino] as { target: string }).target;
    },
  };
  return r;
}

// 1 /, 2 /a, 3 /a/f, 4 /a/up -> .., 5 /abs -> /a/f, 6 /loop1 -> loop2, 7 /loop2 -> loop1,
// 8 /a/evil: a directory whose on-disk '..' claims to be /a/f
const NODES: Record<number, Node> = {
  1: { type: 'dir', entries: { a: 2, abs: 5, loop1: 6, loop2: 7, '..': 3 } },
  2: { type: 'dir', entries: { f: 3, up: 4, evil: 8 } },
  3: { type: 'file', data: 'content' },
  4: { type: 'symlink', target: '..' },
  5: { type: 'symlink', target: '/a/f' },
  6: { type: 'symlink', target: 'loop2' },
  7: { type: 'symlink', target: 'loop1' },
  8: { type: 'dir', entries: { '..': 3 } },
};

test('path walk: . and .. and empty parts, never above the root, never through on-disk ..', async () => {
  const fs = new FileTree(reader(NODES));
  assert.equal(await fs.resolve('/'), 1);
  assert.equal(await fs.resolve(''), 1);
  assert.equal(await fs.resolve('/../../..'), 1);
  assert.equal(await fs.resolve('a//./f'), 3);
  assert.equal(await fs.resolve('/a/evil/..'), 2, "'..' pops the walked path; the directory's own '..' entry is not used");
  assert.equal(await fs.resolve('/a/evil/../../a/f'), 3);
});

test('path walk: symlinks in the middle and (with follow) at the end; absolute targets start at the root', async () => {
  const fs = new FileTree(reader(NODES));
  assert.equal(await fs.resolve('/abs'), 5, 'lstat: the link itself');
  assert.equal(await fs.resolve('/abs', { follow: true }), 3);
  assert.equal(await fs.resolve('/a/up/a/f'), 3, 'a relative link to .. from /a is the root');
  assert.equal((await fs.read('/abs', 0, 100)).toString(), 'content');
  assert.equal(await fs.readlink('/abs'), '/a/f');
  assert.deepEqual((await fs.readdir('/a/up')).map((e) => e.name).sort(), ['..', 'a', 'abs', 'loop1', 'loop2']);
});

test('path walk: errors name the component; loops stop after MAX_SYMLINKS', async () => {
  const r = reader(NODES);
  const fs = new FileTree(r);
  await assert.rejects(fs.stat('/a/missing'), (e: unknown) => e instanceof DiskError && e.code === 'FILENOTFOUND' && e.details.field === 'missing');
  await assert.rejects(fs.stat('/a/f/x'), (e: unknown) => e instanceof DiskError && /not a directory/.test(e.message) && e.details.field === 'x');
  await assert.rejects(fs.readlink('/a/f'), (e: unknown) => e instanceof DiskError && /not a symbolic link/.test(e.message));
  await assert.rejects(fs.read('/a', 0, 1), (e: unknown) => e instanceof DiskError && /is a directory/.test(e.message));
  r.lookups = 0;
  await assert.rejects(fs.read('/loop1', 0, 1), (e: unknown) => e instanceof DiskError && /too many levels of symbolic links/.test(e.message));
  assert.ok(r.lookups <= MAX_SYMLINKS + 2, `a loop costs ${r.lookups} lookups`);
  assert.equal(await fs.resolve('/loop1'), 6, 'lstat of a looping link is fine');
});
