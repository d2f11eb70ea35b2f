/**
 * A repair killed (SIGKILL) at a random moment never makes an image worse: afterwards a check
 * finds no corruption that was not there before, an image whose bad entries were already dropped
 * opens and reads the expected content, and a second repair finishes the job (clean, expected
 * content, qemu-img check clean for VDI). 20 runs per format, small images.
 */
import { test } from 'node:test';
import { open, readFile, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk } from '../../src/index.js';
import { repairKillRuns } from '../helpers/repair-kill.js';
import { hasTool, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;

async function poke(p: string, at: number, data: Buffer): Promise<void> {
  const fh = await open(p, 'r+');
  await fh.write(data, 0, data.length, at);
  await fh.close();
}
const u32 = (v: number, be = false) => {
  const b = Buffer.alloc(4);
  if (be) b.writeUInt32BE(v);
  else b.writeUInt32LE(v);
  return b;
};
const pattern = (n: number, len: number) => Buffer.alloc(len, (n * 37 + 11) & 0xff);

test('vdi: a repair killed at random moments (20 runs) never adds corruption; a second repair finishes it', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-repair-kill-tpl-')).path;
  const p = join(dir, 'tpl.vdi');
  const blocks = 12;
  const expected = Buffer.alloc(blocks * MiB);
  const d = await Disk.create(p, { format: 'vdi', capacity: blocks * MiB });
  for (let b = 0; b < blocks; b++) {
    const data = pattern(b, MiB);
    await d.write(b * MiB, data);
    data.copy(expected, b * MiB);
  }
  await d.close();
  const h = await readFile(p);
  const offBlocks = h.readUInt32LE(0x154);
  const map = (i: number) => h.readUInt32LE(offBlocks + 4 * i);
  await poke(p, offBlocks + 4 * 1, u32(0xffffffff)); // forgotten: a hole
  await poke(p, offBlocks + 4 * 4, u32(0xffffffff)); // a hole
  await poke(p, offBlocks + 4 * 9, u32(map(2))); // shares block 2's (9 loses; its block becomes a hole)
  await poke(p, offBlocks + 4 * 10, u32(7777)); // out of range (its block becomes a hole)
  await truncate(p, (await stat(p)).size + MiB); // a trailing leak
  for (const b of [1, 4, 9, 10]) expected.fill(0, b * MiB, (b + 1) * MiB);
  await repairKillRuns(t, 'vdi', p, expected, 7, hasTool('qemu-img') ? 'vdi' : undefined, true);
});

test('vhd: a repair killed at random moments (20 runs) never adds corruption; a second repair finishes it', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-repair-kill-tpl-')).path;
  const p = join(dir, 'tpl.vhd');
  const size = 16 * MiB;
  const expected = Buffer.alloc(size);
  const d = await Disk.create(p, { format: 'vhd', capacity: size });
  for (const b of [0, 1, 3, 5]) {
    const data = pattern(b, 2 * MiB);
    await d.write(b * 2 * MiB, data);
    data.copy(expected, b * 2 * MiB);
  }
  await d.close();
  const f = await readFile(p);
  const headerAt = Number(f.readBigUInt64BE(16));
  const batAt = Number(f.readBigUInt64BE(headerAt + 16));
  const fileSize = f.length;
  const footer = f.subarray(fileSize - 512);
  await poke(p, batAt + 4 * 6, f.subarray(batAt + 12, batAt + 16)); // shares block 3's place (6 loses)
  await poke(p, batAt + 4 * 7, u32(0x00ffffff, true)); // past the end
  await poke(p, headerAt + 8, Buffer.alloc(8)); // header: stray next offset, bad checksum
  await poke(p, 40, Buffer.from([1])); // footer copy: bad checksum
  const stride = 512 + 2 * MiB;
  await poke(p, fileSize - 512, Buffer.alloc(stride, 0x33)); // a killed allocation: leak + moved footer
  await poke(p, fileSize - 512 + stride, footer);
  await repairKillRuns(t, 'vhd', p, expected, 11);
});
