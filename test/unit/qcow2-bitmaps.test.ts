/**
 * qcow2 bitmaps without qemu: a bitmap added, written through, read back; a damaged bitmaps
 * extension, directory or table is a DiskError naming the field; bitmaps with unknown flags open
 * read-only only; bit helpers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk } from '../../src/disk.js';
import { DiskError } from '../../src/core/errors.js';
import { markBytes, setRanges } from '../../src/formats/qcow2/bitmaps.js';
import { bitmap, bitmapRanges, listBitmaps } from '../../src/ops/bitmap.js';
import { tmpDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

async function made(dir: string): Promise<string> {
  const img = join(dir, 'b.qcow2');
  const d = await Disk.create(img, { format: 'qcow2', capacity: 8 * MiB });
  await d.close();
  await bitmap(img, 'b0', [{ op: 'add' }]);
  const w = await Disk.open(img, {});
  await w.write(3 * MiB + 5, Buffer.alloc(10, 1));
  await w.close();
  return img;
}

/** where the directory and the first entry's table are (from the extension after the feature table) */
async function layout(img: string): Promise<{ ext: number; dir: number; table: number; f: import('node:fs/promises').FileHandle }> {
  const f = await openFile(img, 'r+');
  const c0 = Buffer.alloc(65536);
  await f.read(c0, 0, c0.length, 0);
  let at = c0.readUInt32BE(100); // header_length
  while (c0.readUInt32BE(at) !== 0x23852875) at += 8 + Math.ceil(c0.readUInt32BE(at + 4) / 8) * 8;
  const dir = Number(c0.readBigUInt64BE(at + 8 + 16));
  const e = Buffer.alloc(8);
  await f.read(e, 0, 8, dir);
  return { ext: at + 8, dir, table: Number(e.readBigUInt64BE(0)), f };
}

async function refused(img: string, field: RegExp, code = 'CORRUPT', readOnly = true): Promise<void> {
  await assert.rejects(
    async () => (await Disk.open(img, { readOnly })).close(),
    (err: unknown) => err instanceof DiskError && err.code === code && field.test(String(err.details.field)),
  );
}

test('a bitmap added, written through and read back; ranges in granules', async (t) => {
  const dir = (await tmpDir(t)).path;
  const img = await made(dir);
  assert.deepEqual(await listBitmaps(img), [{ name: 'b0', granularity: 65536, flags: ['auto'], enabled: true, inconsistent: false }]);
  assert.deepEqual(await bitmapRanges(img, 'b0'), [{ offset: 3 * MiB, length: 65536 }]);
  await bitmap(img, 'b0', [{ op: 'disable' }, { op: 'clear' }]);
  assert.deepEqual(await bitmapRanges(img, 'b0'), []);
  await assert.rejects(bitmap(img, 'b0', [{ op: 'add' }]), /already exists/);
  await assert.rejects(bitmap(img, 'nope', [{ op: 'clear' }]), /no bitmap named/);
  await assert.rejects(bitmap(img, 'g', [{ op: 'add', granularity: 1000 }]), /power of two/);
});

test('damaged bitmaps extension, directory or table: a DiskError naming the field', async (t) => {
  const dir = (await tmpDir(t)).path;
  const img = await made(dir);
  const pristine = Buffer.from(await (await import('node:fs/promises')).readFile(img));
  const restore = async () => (await import('node:fs/promises')).writeFile(img, pristine);
  const poke = async (at: (l: Awaited<ReturnType<typeof layout>>) => number, bytes: Buffer) => {
    await restore();
    const l = await layout(img);
    await l.f.write(bytes, 0, bytes.length, at(l));
    await l.f.close();
  };
  const u32 = (v: number) => Buffer.from([v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255]);
  await poke((l) => l.ext, u32(3)); // nb_bitmaps 3, directory holds 1
  await refused(img, /nb_bitmaps/);
  await poke((l) => l.ext + 8, Buffer.from([0, 0, 0, 0, 0x7f, 0, 0, 0])); // directory size 2 GiB
  await refused(img, /bitmap_directory_size/);
  await poke((l) => l.ext + 16, Buffer.from([0, 0, 0, 0, 0, 0, 0x10, 0])); // directory offset unaligned
  await refused(img, /bitmap_directory_offset/);
  await poke((l) => l.dir + 17, Buffer.from([40])); // granularity_bits 40
  await refused(img, /bitmap\[0\]\.granularity_bits/);
  await poke((l) => l.dir + 8, u32(999)); // table size
  await refused(img, /bitmap\[0\]\.bitmap_table_size/);
  await poke((l) => l.dir + 18, Buffer.from([0xff, 0xff])); // name runs past the directory
  await refused(img, /bitmap\[0\]\.extra_data_size|bitmap\[0\]\.name_size/);
  // a table entry with reserved bits: the open works, reading the bits does not
  await poke((l) => l.table, Buffer.from([0, 0, 0, 0, 0, 0, 0, 2]));
  await assert.rejects(bitmapRanges(img, 'b0'), (err: unknown) => err instanceof DiskError && err.code === 'CORRUPT' && err.details.field === 'b0[0]');
  // unknown flags: read-only opens list the bitmap, read-write opens are refused
  await poke((l) => l.dir + 12, u32(0x12));
  assert.equal((await listBitmaps(img)).length, 1);
  await refused(img, /flags/, 'UNSUPPORTEDFEATURE', false);
  await restore();
  assert.deepEqual(await bitmapRanges(img, 'b0'), [{ offset: 3 * MiB, length: 65536 }]);
});

test('bit helpers: granules marked and read back as maximal byte ranges clipped to the disk', () => {
  const bits = Buffer.alloc(4);
  markBytes(bits, 9, 100, 1); // granule 0
  markBytes(bits, 9, 512 * 7, 512 * 10); // granules 7..16
  markBytes(bits, 9, 512 * 31, 1); // the last granule
  assert.deepEqual(setRanges(bits, 9, 512 * 31 + 100), [
    { offset: 0, length: 512 },
    { offset: 512 * 7, length: 512 * 10 },
    { offset: 512 * 31, length: 100 },
  ]);
});
