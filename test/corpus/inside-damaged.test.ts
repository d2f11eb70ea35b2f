/**
 * Damaged partition tables, LVM metadata and volume headers: seeded mutations of hand-built
 * disks (test/helpers/inside-builders.ts). Every case must end in a listing (with warnings) or
 * a DiskError, never another exception, within a second of CPU and a bounded number of bytes
 * read. A failing seed is printed; rerun it by its number.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DiskError } from '../../src/core/errors.js';
import { listVolumes } from '../../src/inside/volumes.js';
import { detectVolume } from '../../src/inside/detect/index.js';
import { buildGpt, lvmDashed, lvmId, memSource, resealGptHeader, writeMbr, writePv } from '../helpers/inside-builders.js';
import { Rng } from '../helpers/prng.js';

const LINUX = '0fc63daf-8483-4772-8e79-3d69d8477de4';
const LVM = 'e6d6d379-f507-44c2-a23c-238f2a3df928';
const CASES = 150;
const MAX_READ = 64 * 1024 * 1024;

/** mutate `n` bytes inside the given regions (offset, length) */
function mutate(rng: Rng, d: Buffer, regions: readonly [number, number][], n: number): void {
  for (let i = 0; i < n; i++) {
    const [at, len] = rng.pick(regions);
    const o = at + rng.int(0, len - 1);
    d[o] = rng.chance(0.3) ? rng.pick([0, 0xff, 0x7f, 0x80, 1]) : rng.int(0, 255);
  }
}

async function survives(what: string, seed: number, disk: Buffer): Promise<void> {
  const src = memSource(disk);
  const t0 = process.cpuUsage();
  try {
    await listVolumes(src);
  } catch (err) {
    if (!(err instanceof DiskError)) assert.fail(`${what} seed ${seed}: ${(err as Error)?.stack ?? String(err)}`);
  }
  const cpu = process.cpuUsage(t0);
  assert.ok((cpu.user + cpu.system) / 1e6 < 1, `${what} seed ${seed}: ${(cpu.user + cpu.system) / 1e3} ms of CPU`);
  assert.ok(src.bytesRead <= MAX_READ, `${what} seed ${seed}: read ${src.bytesRead} bytes`);
}

test('mutated GPT headers and entry arrays (CRCs resealed half the time): a listing or a DiskError, quickly', async () => {
  const ss = 512;
  const sectors = 8192;
  const base = buildGpt({ sectorSize: ss, sectors, parts: [{ type: LINUX, first: 64, last: 1023 }, { type: LVM, first: 1024, last: 4095 }] });
  for (let seed = 1; seed <= CASES; seed++) {
    const rng = new Rng(seed);
    const d = Buffer.from(base);
    const regions: [number, number][] = [[446, 64], [ss, 92], [2 * ss, 256], [(sectors - 1) * ss, 92]];
    mutate(rng, d, regions, rng.int(1, 8));
    if (rng.chance(0.5)) {
      resealGptHeader(d, 1, ss);
      resealGptHeader(d, sectors - 1, ss);
    }
    await survives('GPT', seed, d);
  }
});

test('mutated MBR and EBR chains: a listing or a DiskError, quickly', async () => {
  const base = Buffer.alloc(8192 * 512);
  writeMbr(base, 0, [{ type: 0x83, lba: 2048, sectors: 1024 }, { type: 0x05, lba: 4096, sectors: 4000 }]);
  writeMbr(base, 4096 * 512, [{ type: 0x07, lba: 63, sectors: 500 }, { type: 0x05, lba: 1000, sectors: 600 }]);
  writeMbr(base, 5096 * 512, [{ type: 0x82, lba: 63, sectors: 400 }, { type: 0x05, lba: 2000, sectors: 600 }]);
  writeMbr(base, 6096 * 512, [{ type: 0x83, lba: 63, sectors: 400 }]);
  const regions: [number, number][] = [[446, 64], [4096 * 512 + 446, 64], [5096 * 512 + 446, 64], [6096 * 512 + 446, 64]];
  for (let seed = 1; seed <= CASES; seed++) {
    const rng = new Rng(seed);
    const d = Buffer.from(base);
    mutate(rng, d, regions, rng.int(1, 6));
    await survives('MBR', seed, d);
  }
});

test('mutated LVM labels, metadata area headers and metadata text: a listing or a DiskError, quickly', async () => {
  const base = Buffer.alloc(4 * 1024 * 1024);
  const text = `vg {\nid = "${lvmDashed(lvmId(5))}"\nseqno = 1\nextent_size = 8\nphysical_volumes {\npv0 {\nid = "${lvmDashed(lvmId(1))}"\npe_start = 2048\npe_count = 100\n}\n}\nlogical_volumes {\nlv {\nid = "x"\nstatus = ["READ", "VISIBLE"]\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 16\ntype = "striped"\nstripe_count = 2\nstripe_size = 2\nstripes = ["pv0", 0, "pv0", 40]\n}\n}\n}\n}\n`;
  writePv(base, 0, { id: lvmId(1), size: base.length, text, mdaSize: 512 * 1024 });
  const regions: [number, number][] = [[512, 128], [4096, 64], [4096 + 512, text.length]];
  for (let seed = 1; seed <= CASES; seed++) {
    const rng = new Rng(seed);
    const d = Buffer.from(base);
    mutate(rng, d, regions, rng.int(1, 6));
    await survives('LVM', seed, d);
  }
});

test('volume probes on random bytes behind each magic: an answer or undefined, never a throw', async () => {
  const magics: [number, string][] = [
    [3, 'NTFS    '],
    [3, 'EXFAT   '],
    [54, 'FAT16   '],
    [82, 'FAT32   '],
    [1024 + 56, '\x53\xef'],
    [0, 'XFSB'],
    [0x10040, '_BHRfS_M'],
    [4086, 'SWAPSPACE2'],
    [0, 'LUKS\xba\xbe'],
    [32769, 'CD001'],
  ];
  for (let seed = 1; seed <= CASES; seed++) {
    const rng = new Rng(seed);
    const d = rng.bytes(128 * 1024);
    const [at, magic] = rng.pick(magics);
    d.write(magic, at, 'latin1');
    if (rng.chance(0.5)) d.writeUInt16LE(0xaa55, 510);
    if (rng.chance(0.5)) d[0] = 0xeb;
    if (magic === 'CD001') d[32768] = 1;
    const src = memSource(d);
    await detectVolume(src);
    assert.ok(src.bytesRead <= 1024 * 1024, `seed ${seed}: read ${src.bytesRead}`);
  }
});
