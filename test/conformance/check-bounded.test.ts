/**
 * check on tables full of bad entries: findings come one per problem with a count, memory and
 * time stay bounded by the file, not by what a header claims. A dynamic VHD whose header
 * claimed a huge BAT (checksum fixed) made `vdkit check` grow to 4.5 GB and die after 93 s
 * ("JavaScript heap out of memory"): one finding per entry past the disk's end.
 *
 * The CLI runs as a child with a 256 MiB heap: the old code dies there.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk } from '../../src/index.js';
import type { CheckReport } from '../../src/formats/types.js';
import { vhdChecksum } from '../../src/formats/vhd/structs.js';
import { run, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;
const VDKIT = new URL('../../../bin/vdkit.js', import.meta.url).pathname;

async function poke(p: string, at: number, data: Buffer): Promise<void> {
  const fh = await open(p, 'r+');
  await fh.write(data, 0, data.length, at);
  await fh.close();
}
async function readAt(p: string, at: number, n: number): Promise<Buffer> {
  const fh = await open(p, 'r');
  const b = Buffer.alloc(n);
  await fh.read(b, 0, n, at);
  await fh.close();
  return b;
}

/** `vdkit check --json [...]` in a child with a 256 MiB heap; its report, exit code and time */
async function checkCli(p: string, repair = false): Promise<{ code: number; report: CheckReport; ms: number }> {
  const t0 = Date.now();
  const r = await run(process.execPath, ['--max-old-space-size=256', VDKIT, 'check', '--json', ...(repair ? ['--repair'] : []), p], { timeout: 60_000 });
  const ms = Date.now() - t0;
  assert.ok(r.stdout.startsWith('{'), `a report, not a crash (exit ${r.code}, ${ms} ms): ${r.stderr.slice(0, 400)}`);
  return { code: r.code, report: JSON.parse(r.stdout) as CheckReport, ms };
}

test('vhd check: a header claiming a huge BAT (checksum fixed) is one finding; the repair cuts the claim and keeps every block', async (t) => {
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'huge-bat.vhd');
  const size = 32 * MiB;
  const data = Buffer.alloc(size, 0x11); // every byte of every block reads as a used BAT entry
  const d = await Disk.create(p, { format: 'vhd', capacity: size });
  await d.write(0, data);
  await d.close();
  const headerAt = Number((await readAt(p, 0, 512)).readBigUInt64BE(16));
  const header = await readAt(p, headerAt, 1024);
  header.writeUInt32BE(0x7fffffff, 28); // maxTableEntries
  header.writeUInt32BE(vhdChecksum(header, 36), 36);
  await poke(p, headerAt, header);

  const r = await checkCli(p);
  assert.equal(r.code, 2, JSON.stringify(r.report.findings).slice(0, 400));
  assert.ok(r.report.findings.length <= 5, `${r.report.findings.length} findings`);
  assert.deepEqual(r.report.findings.map((f) => f.field), ['maxTableEntries']);
  assert.ok(r.ms < 20_000, `${r.ms} ms`);

  const fixed = await checkCli(p, true);
  assert.ok(fixed.report.findings.every((f) => f.kind === 'warning' || f.repaired), JSON.stringify(fixed.report.findings));
  assert.deepEqual((await checkCli(p)).report.findings, []);
  const back = await Disk.open(p, { readOnly: true });
  assert.ok((await back.read(0, size)).equals(data), 'every block kept');
  await back.close();
});

test('vhd check: many bad BAT entries of one kind are one finding with their count; the repair clears them in a few writes', async (t) => {
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'bad-entries.vhd');
  // 64 GiB of 2 MiB blocks: 32768 entries in use
  const d = await Disk.create(p, { format: 'vhd', capacity: 64 * 2 ** 30 });
  await d.write(0, Buffer.alloc(4096, 0x22));
  await d.close();
  const headerAt = Number((await readAt(p, 0, 512)).readBigUInt64BE(16));
  const batAt = Number((await readAt(p, headerAt, 1024)).readBigUInt64BE(16));
  await poke(p, batAt + 4 * 10, Buffer.alloc(4 * 8000, 0x7f)); // entries 10..8009: far past the end of the file
  const r = await checkCli(p);
  assert.equal(r.code, 2);
  const bad = r.report.findings.filter((f) => f.kind === 'corruption');
  assert.equal(bad.length, 1, JSON.stringify(r.report.findings));
  assert.equal(bad[0]!.field, 'BAT[10..8009]');
  assert.match(bad[0]!.message, /^8000 BAT entries \(10-8009\)/);
  const fixed = await checkCli(p, true);
  assert.ok(fixed.report.findings.every((f) => f.repaired), JSON.stringify(fixed.report.findings));
  assert.deepEqual((await checkCli(p)).report.findings, []);
  const back = await Disk.open(p, { readOnly: true });
  assert.ok((await back.read(0, 4096)).equals(Buffer.alloc(4096, 0x22)));
  await back.close();
});

test('vdi check: a block map whose millions of entries share one block is one finding; the repair frees them', async (t) => {
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'shared.vdi');
  // 4 TiB of 1 MiB blocks: a 16 MiB map (4 Mi entries)
  const d = await Disk.create(p, { format: 'vdi', capacity: 4 * 2 ** 40 });
  await d.write(0, Buffer.alloc(4096, 0x33));
  await d.close();
  const h = await readAt(p, 0, 0x200);
  const offBlocks = h.readUInt32LE(0x154);
  const cBlocks = h.readUInt32LE(0x180);
  assert.equal(cBlocks, 4 * 2 ** 20);
  await poke(p, offBlocks + 4, Buffer.alloc(4 * (cBlocks - 1))); // every entry names physical block 0
  const r = await checkCli(p);
  assert.equal(r.code, 2);
  assert.ok(r.report.findings.length <= 5, `${r.report.findings.length} findings`);
  const shared = r.report.findings.find((f) => (f.field ?? '').startsWith('blockMap['))!;
  assert.equal(shared.field, `blockMap[1..${cBlocks - 1}]`);
  assert.match(shared.message, new RegExp(`^${cBlocks - 1} blockMap entries`));
  assert.ok(r.ms < 20_000, `${r.ms} ms`);
  const fixed = await checkCli(p, true);
  assert.ok(fixed.report.findings.every((f) => f.kind === 'warning' || f.repaired), JSON.stringify(fixed.report.findings));
  assert.deepEqual((await checkCli(p)).report.findings, []);
  const back = await Disk.open(p, { readOnly: true });
  assert.ok((await back.read(0, 4096)).equals(Buffer.alloc(4096, 0x33)));
  assert.ok((await back.read(MiB, 4096)).equals(Buffer.alloc(4096)), 'freed entries read as zeros');
  await back.close();
  assert.ok((await stat(p)).size < 64 * MiB);
});
