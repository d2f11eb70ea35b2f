/**
 * Damaged ext filesystems: one small ext4 (1 KiB blocks, a file fragmented into an extent tree of
 * depth 1 by debugfs) made here, then mutated in memory at the spec's offsets: superblock counts
 * and sizes, INCOMPAT features, a group descriptor, extent headers (a node pointing at itself, a
 * broken magic, entries > max, an extent past the end), directory entries (rec_len 0, a name
 * longer than its record, an inode past the last), inode sizes (past what the filesystem can
 * address, a directory of absurd size, a huge symlink), and a truncated image. Each must give a
 * DiskError with the code, the image and the field named, within a second, having read little: the source
 * counts its bytes, so a reader that followed an absurd count would fail the bound.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { DiskError, openExt, type ErrorCode, type Filesystem, type FsSource } from '../../src/index.js';
import { Superblock } from '../../src/inside/fs/ext/structs.js';
import { hasTool, inCI, tmpDir, type TmpDir } from '../helpers/tools.js';
import { run } from '../interop/ext-support.js';

const BS = 1024;
const SB = 1024;
const sbOff = (f: Parameters<typeof Superblock.offsetOf>[0]) => SB + Superblock.offsetOf(f);

/** a Buffer as a source that counts what is read from it */
class CountingSource implements FsSource {
  bytesRead = 0;
  constructor(readonly buf: Buffer) {}
  get capacity(): number {
    return this.buf.length;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || offset + length > this.buf.length) throw new DiskError('OUTOFRANGE', undefined, { offset, length });
    this.bytesRead += length;
    return Buffer.from(this.buf.subarray(offset, offset + length));
  }
}

interface Facts {
  image: Buffer;
  /** byte offset of an inode in the image */
  inodeAt: Record<'root' | 'frag' | 'd' | 'small' | 'link', number>;
  /** the extent index block of /frag (depth 1) */
  fragLeaf: number;
  /** /d's first directory block */
  dirBlock: number;
}

let facts: Facts | undefined;
let scratch: TmpDir | undefined;
let skipReason: string | undefined;

async function debugfs(image: string, req: string): Promise<string> {
  const r = await run('debugfs', ['-R', req, image]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

before(async () => {
  const missing = ['mkfs.ext4', 'debugfs'].filter((n) => !hasTool(n));
  if (missing.length > 0) {
    skipReason = `${missing.join(', ')} not installed: install e2fsprogs`;
    if (inCI()) throw new Error(`${skipReason} — CI is set`);
    return;
  }
  scratch = await tmpDir(undefined, 'vdkit-ext-bad-');
  const dir = scratch.path;
  await mkdir(join(dir, 'src', 'd'), { recursive: true });
  for (let i = 0; i < 20; i++) await writeFile(join(dir, 'src', 'd', `p${i}`), Buffer.alloc(BS, i + 1));
  await writeFile(join(dir, 'src', 'd', 'small'), 'hi\n');
  const img = join(dir, 'fs.img');
  let r = await run('mkfs.ext4', ['-q', '-F', '-b', String(BS), '-I', '256', '-d', join(dir, 'src'), img, '8M']);
  assert.equal(r.code, 0, r.stderr);
  await writeFile(join(dir, 'frag'), Buffer.alloc(15 * BS, 0x5a));
  const cmds = [...[0, 2, 4, 6, 8, 10, 12, 14].map((i) => `rm /d/p${i}`), `write ${join(dir, 'frag')} /frag`, 'symlink /link /d/small'];
  await writeFile(join(dir, 'cmds'), cmds.join('\n') + '\n');
  r = await run('debugfs', ['-w', '-f', join(dir, 'cmds'), img]);
  assert.equal(r.code, 0, r.stderr);

  const inodeAt = async (path: string) => {
    const m = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(await debugfs(img, `imap ${path}`))!;
    return Number(m[1]) * BS + parseInt(m[2]!, 16);
  };
  const ex = await debugfs(img, 'ex /frag');
  const leaf = /^\s*0\/\s*1\s+1\/\s*1\s+\d+\s+-\s+\d+\s+(\d+)/m.exec(ex);
  assert.ok(leaf, `/frag has a depth-1 extent tree:\n${ex}`);
  facts = {
    image: await readFile(img),
    inodeAt: { root: await inodeAt('<2>'), frag: await inodeAt('/frag'), d: await inodeAt('/d'), small: await inodeAt('/d/small'), link: await inodeAt('/link') },
    fragLeaf: Number(leaf[1]),
    dirBlock: Number((await debugfs(img, 'bmap /d 0')).trim()),
  };
});

interface Case {
  name: string;
  code: ErrorCode;
  field: string;
  mutate(b: Buffer, f: Facts): void;
  /** what to do after opening (the open itself for superblock damage) */
  act?(fs: Filesystem): Promise<unknown>;
}

const I_SIZE_LO = 0x04;
const I_SIZE_HIGH = 0x6c;
const I_BLOCK = 0x28;
const I_EXTRA = 0x80;

const CASES: Case[] = [
  { name: 'inode count larger than the groups hold', code: 'CORRUPT', field: 's_inodes_count', mutate: (b) => b.writeUInt32LE(0xffffffff, sbOff('inodesCount')) },
  { name: 'block count past the source', code: 'CORRUPT', field: 's_blocks_count', mutate: (b) => b.writeUInt32LE(0xfffffff0, sbOff('blocksCountLo')) },
  { name: 'block size 2^30', code: 'CORRUPT', field: 's_log_block_size', mutate: (b) => b.writeUInt32LE(20, sbOff('logBlockSize')) },
  { name: 'blocks per group 0', code: 'CORRUPT', field: 's_blocks_per_group', mutate: (b) => b.writeUInt32LE(0, sbOff('blocksPerGroup')) },
  { name: 'inodes per group past a bitmap', code: 'CORRUPT', field: 's_inodes_per_group', mutate: (b) => b.writeUInt32LE(BS * 8 + 1, sbOff('inodesPerGroup')) },
  { name: 'inode size 100', code: 'CORRUPT', field: 's_inode_size', mutate: (b) => b.writeUInt16LE(100, sbOff('inodeSize')) },
  { name: 'revision 7', code: 'UNSUPPORTEDDISKVERSION', field: 's_rev_level', mutate: (b) => b.writeUInt32LE(7, sbOff('revLevel')) },
  {
    name: 'INCOMPAT encrypt and an unknown bit, both named',
    code: 'UNSUPPORTEDFEATURE',
    field: 's_feature_incompat',
    mutate: (b) => b.writeUInt32LE((b.readUInt32LE(sbOff('featureIncompat')) | 0x10000 | 0x80000000) >>> 0, sbOff('featureIncompat')),
  },
  { name: 'bad magic', code: 'INVALIDDISK', field: 'magic', mutate: (b) => b.writeUInt16LE(0x1234, sbOff('magic')) },
  { name: 'inode table of group 0 past the end', code: 'CORRUPT', field: 'bg_inode_table', mutate: (b) => b.writeUInt32LE(0xfffffff0, 2 * BS + 8) },
  {
    name: 'an extent index node that points at itself (a loop)',
    code: 'CORRUPT',
    field: 'eh_depth',
    mutate: (b, f) => {
      // the root says depth 2; the leaf block becomes an index node at depth 1 whose one entry is itself
      b.writeUInt16LE(2, f.inodeAt.frag + I_BLOCK + 6);
      const at = f.fragLeaf * BS;
      b.writeUInt16LE(1, at + 2); // eh_entries
      b.writeUInt16LE(1, at + 6); // eh_depth
      b.writeUInt32LE(0, at + 12); // ei_block
      b.writeUInt32LE(f.fragLeaf, at + 16); // ei_leaf_lo
      b.writeUInt16LE(0, at + 20); // ei_leaf_hi
    },
    act: (fs) => fs.read('/frag', 0, 4096),
  },
  { name: 'extent tree deeper than 5', code: 'CORRUPT', field: 'eh_depth', mutate: (b, f) => b.writeUInt16LE(6, f.inodeAt.frag + I_BLOCK + 6), act: (fs) => fs.read('/frag', 0, 10) },
  { name: 'extent root without magic', code: 'CORRUPT', field: 'eh_magic', mutate: (b, f) => b.writeUInt16LE(0, f.inodeAt.frag + I_BLOCK), act: (fs) => fs.read('/frag', 0, 10) },
  { name: 'extent leaf with entries > max', code: 'CORRUPT', field: 'eh_entries', mutate: (b, f) => b.writeUInt16LE(0xffff, f.fragLeaf * BS + 2), act: (fs) => fs.read('/frag', 0, 10) },
  {
    name: 'an extent past the end of the filesystem',
    code: 'CORRUPT',
    field: 'ee_start',
    mutate: (b, f) => b.writeUInt32LE(0xfffffff0, f.fragLeaf * BS + 12 + 8),
    act: (fs) => fs.read('/frag', 0, 10),
  },
  { name: 'directory entry rec_len 0', code: 'CORRUPT', field: 'rec_len', mutate: (b, f) => b.writeUInt16LE(0, f.dirBlock * BS + 4), act: (fs) => fs.readdir('/d') },
  { name: 'directory entry name longer than its record', code: 'CORRUPT', field: 'name_len', mutate: (b, f) => b.writeUInt8(200, f.dirBlock * BS + 6), act: (fs) => fs.readdir('/d') },
  { name: 'directory entry naming an inode past the last', code: 'CORRUPT', field: 'inode', mutate: (b, f) => b.writeUInt32LE(0x7fffffff, f.dirBlock * BS + 12 + 0), act: (fs) => fs.readdir('/d') },
  {
    name: 'file size 2^60 (past what the filesystem can address)',
    code: 'CORRUPT',
    field: 'i_size',
    mutate: (b, f) => b.writeUInt32LE(0x10000000, f.inodeAt.small + I_SIZE_HIGH),
    act: (fs) => fs.stat('/d/small'),
  },
  {
    name: 'directory size of 2 TiB',
    code: 'CORRUPT',
    field: 'i_size',
    mutate: (b, f) => b.writeUInt32LE(0x200, f.inodeAt.d + I_SIZE_HIGH),
    act: (fs) => fs.readdir('/d'),
  },
  { name: 'symlink of 1 MiB', code: 'CORRUPT', field: 'i_size', mutate: (b, f) => b.writeUInt32LE(1 << 20, f.inodeAt.link + I_SIZE_LO), act: (fs) => fs.readlink('/link') },
  { name: 'i_extra_isize past the inode', code: 'CORRUPT', field: 'i_extra_isize', mutate: (b, f) => b.writeUInt16LE(400, f.inodeAt.small + I_EXTRA), act: (fs) => fs.stat('/d/small') },
  { name: 'root inode not a directory', code: 'CORRUPT', field: 'i_mode', mutate: (b, f) => b.writeUInt16LE(0o100644, f.inodeAt.root) },
];

for (const c of CASES) {
  test(`damaged ext: ${c.name} -> ${c.code} naming ${c.field}`, async (t) => {
    if (skipReason) return t.skip(skipReason);
    const f = facts!;
    const b = Buffer.from(f.image);
    c.mutate(b, f);
    const src = new CountingSource(b);
    const started = process.cpuUsage();
    const err = await (async () => {
      try {
        const fs = await openExt(src, { name: 'fs.img' });
        if (!c.act) return undefined;
        await c.act(fs);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    const cpu = process.cpuUsage(started);
    assert.ok(err instanceof DiskError, `expected a DiskError, got ${String(err)}`);
    assert.equal(err.code, c.code, err.message);
    assert.equal(err.details.field, c.field, err.message);
    assert.equal(err.details.path, 'fs.img', `the error names the image: ${err.message}`);
    if (c.code === 'UNSUPPORTEDFEATURE') assert.match(err.message, /encrypt, unknown 0x80000000/);
    assert.ok(cpu.user + cpu.system < 1_000_000, `took ${(cpu.user + cpu.system) / 1000} ms of CPU`);
    assert.ok(src.bytesRead < 1024 * 1024, `read ${src.bytesRead} bytes`);
  });
}

test('damaged ext: an image cut short is refused at open, naming the block count', async (t) => {
  if (skipReason) return t.skip(skipReason);
  const src = new CountingSource(facts!.image.subarray(0, facts!.image.length / 2));
  await assert.rejects(openExt(src), (e: unknown) => e instanceof DiskError && e.code === 'CORRUPT' && e.details.field === 's_blocks_count');
});

test('ext: needs_recovery opens with a warning that data may be stale; the undamaged image has none', async (t) => {
  if (skipReason) return t.skip(skipReason);
  assert.deepEqual((await openExt(new CountingSource(facts!.image))).statfs().warnings, []);
  const b = Buffer.from(facts!.image);
  b.writeUInt32LE(b.readUInt32LE(sbOff('featureIncompat')) | 0x4, sbOff('featureIncompat'));
  const fs = await openExt(new CountingSource(b));
  const w = fs.statfs().warnings;
  assert.equal(w.length, 1);
  assert.match(w[0]!.text, /needs recovery.*stale/);
  assert.ok(fs.statfs().features.includes('needs_recovery'));
  assert.equal((await fs.read('/d/small', 0, 100)).toString(), 'hi\n');
});

test('ext: the undamaged image reads (the mutations above are what fails)', async (t) => {
  if (skipReason) return t.skip(skipReason);
  const fs = await openExt(new CountingSource(facts!.image));
  assert.ok((await fs.read('/frag', 0, 15 * BS)).equals(Buffer.alloc(15 * BS, 0x5a)));
  assert.equal((await fs.readdir('/d')).length, 20 - 8 + 1);
  assert.equal(await fs.readlink('/link'), '/d/small');
});

after(() => scratch?.cleanup());
