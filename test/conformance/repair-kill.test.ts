/**
 * A repair killed (SIGKILL) at a random moment never makes an image worse: afterwards a check
 * finds no corruption that was not there before, an image whose bad entries were already dropped
 * opens and reads the expected content, and a second repair finishes the job (clean, expected
 * content, qemu-img check clean for VDI). 20 runs per format, small images.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, open, readFile, stat, truncate } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Disk, checkDisk, openFindings } from '../../src/index.js';
import type { CheckReport } from '../../src/formats/types.js';
import { mulberry32 } from '../helpers/prng.js';
import { hasTool, run, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;
const RUNS = 20;
const RUNNER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/repair-runner.js');

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

/** Run the repair; SIGKILL it `delayMs` after it says it is ready. Resolves with whether it was killed, and its time when it was not. */
function repairKilledAfter(path: string, delayMs: number): Promise<{ killed: boolean; ms?: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [RUNNER, path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stderr.on('data', (c) => (err += c));
    p.stdout.on('data', (c: Buffer) => {
      const before = out;
      out += c.toString();
      if (!before.includes('ready\n') && out.includes('ready\n')) {
        if (delayMs <= 0) p.kill('SIGKILL');
        else setTimeout(() => p.kill('SIGKILL'), delayMs);
      }
    });
    p.on('error', reject);
    p.on('close', (code, signal) => {
      if (signal === 'SIGKILL') resolve({ killed: true });
      else if (code === 0) resolve({ killed: false, ms: Number(/done ([\d.]+)/.exec(out)?.[1]) });
      else reject(new Error(`repair runner failed (${code}): ${err}`));
    });
  });
}

const corruptFields = (r: CheckReport) => r.findings.filter((f) => f.kind === 'corruption' && !f.repaired).map((f) => f.field!);

async function killRuns(t: TestContext, label: string, template: string, expected: Buffer, seed: number): Promise<void> {
  const dir = (await tmpDir(t, `vdkit-repair-kill-${label}-`)).path;
  const original = await checkDisk(template, { repair: false });
  const before = new Set(corruptFields(original));
  assert.ok(before.size > 0 && original.findings.some((f) => f.kind === 'leak'), `${label}: the template is damaged`);
  // how long a whole repair takes here: kills land anywhere in [0, 1.2 x that]
  const probe = join(dir, 'probe');
  await copyFile(template, probe);
  const whole = await repairKilledAfter(probe, 60_000);
  assert.equal(whole.killed, false);
  const rnd = mulberry32(seed);
  let killedMidway = 0;
  const one = async (i: number) => {
    const p = join(dir, `run${i}.${label}`);
    await copyFile(template, p);
    const r = await repairKilledAfter(p, rnd() * whole.ms! * 1.2);
    const after = await checkDisk(p, { repair: false, chain: false });
    const now = corruptFields(after);
    for (const f of now) assert.ok(before.has(f), `${label} run ${i}: a killed repair left a new corruption ${f}: ${JSON.stringify(after.findings)}`);
    if (now.length > 0 && now.length < before.size) killedMidway++;
    if (now.length === 0) {
      // every bad entry already dropped: the image opens and reads what the repair promises
      const d = await Disk.open(p, { readOnly: true });
      const got = await d.read(0, expected.length);
      await d.close();
      assert.ok(got.equals(expected), `${label} run ${i}: content after the kill (killed: ${r.killed})`);
    }
    const fixed = await checkDisk(p, { repair: true, chain: false });
    assert.deepEqual(openFindings(fixed), { corruptions: 0, leaks: 0 }, `${label} run ${i}: a second repair finishes: ${JSON.stringify(fixed.findings)}`);
    const d = await Disk.open(p, { readOnly: true });
    const got = await d.read(0, expected.length);
    await d.close();
    assert.ok(got.equals(expected), `${label} run ${i}: content after the second repair`);
    if (label === 'vdi' && hasTool('qemu-img')) assert.equal((await run('qemu-img', ['check', '-f', 'vdi', p])).code, 0);
  };
  for (let i = 0; i < RUNS; i += 4) await Promise.all([i, i + 1, i + 2, i + 3].filter((k) => k < RUNS).map(one));
  t.diagnostic(`${label}: whole repair ${whole.ms} ms; ${killedMidway} of ${RUNS} kills left a half-done repair`);
}

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
  await killRuns(t, 'vdi', p, expected, 7);
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
  await killRuns(t, 'vhd', p, expected, 11);
});
