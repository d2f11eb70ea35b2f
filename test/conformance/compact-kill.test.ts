/**
 * compact killed (SIGKILL) at random moments, 20 runs per format on small images: afterwards the
 * image opens and reads exactly the content it had (compact never changes what a disk reads),
 * vdkit's check finds no corruption (leaks allowed) and qemu-img check agrees where it knows the
 * format; in every fifth run a repair then leaves a clean image with the same content, and a
 * second compact finishes the job.
 *
 * VDI: the header count (cBlocksAllocated) and the dropped map entries change in one write, so
 * no kill leaves the count off the map (QEMU calls that a corruption): both layouts, the map
 * at 1 MiB (VirtualBox's and vdkit's) and right after the header (QEMU's).
 * VHDX: BAT changes go through the log, and a session's log is marked applied only at close, so
 * a kill leaves a log that the next read-write open replays (check reports it on field
 * `logGuid`; QEMU refuses to open such an image without `check -r all`): allowed, and replayed
 * by the repair.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Disk, checkDisk, openFindings } from '../../src/index.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;
const RUNS = 20;
const WORKER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/compact-kill-worker.js');

interface Kind {
  label: string;
  format: string;
  ext: string;
  unit: number;
  /** units in the template image (small: 20 copies are made) */
  units: number;
  create: Record<string, unknown>;
  qemuCheck: boolean;
  /** corruption findings (fields) a kill may leave that a repair clears (see the header) */
  tolerated: string[];
  /** the template's empty image made by qemu-img (its layout), not by vdkit */
  qemuMade?: boolean;
}

const KINDS: Kind[] = [
  { label: 'vdi', format: 'vdi', ext: 'vdi', unit: MiB, units: 16, create: {}, qemuCheck: true, tolerated: [] },
  { label: 'vdi qemu-made', format: 'vdi', ext: 'vdi', unit: MiB, units: 16, create: {}, qemuCheck: true, tolerated: [], qemuMade: true },
  { label: 'qcow2', format: 'qcow2', ext: 'qcow2', unit: 64 * 1024, units: 16, create: {}, qemuCheck: true, tolerated: [] },
  { label: 'vhdx', format: 'vhdx', ext: 'vhdx', unit: MiB, units: 16, create: { blockSize: MiB }, qemuCheck: true, tolerated: ['logGuid'] },
  { label: 'vhd', format: 'vhd', ext: 'vhd', unit: 2 * MiB, units: 8, create: {}, qemuCheck: false, tolerated: [] },
];

/** Run the worker; SIGKILL it when it prints `step <killAt>` (never: it runs to the end). */
function killedAt(path: string, killAt: number): Promise<{ killed: boolean; steps?: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [WORKER, 'compact', path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stderr.on('data', (c) => (err += c));
    p.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes(`step ${killAt}\n`)) p.kill('SIGKILL');
    });
    p.on('error', reject);
    p.on('close', (code, signal) => {
      if (signal === 'SIGKILL') resolve({ killed: true });
      else if (code === 0) resolve({ killed: false, steps: Number(/done (\d+)/.exec(out)?.[1]) });
      else reject(new Error(`compact worker failed (${code}): ${err}`));
    });
  });
}

async function readAll(path: string): Promise<Buffer> {
  const d = await Disk.open(path, { readOnly: true, singleLink: true });
  try {
    return await d.read(0, d.capacity);
  } finally {
    await d.close();
  }
}

async function template(dir: string, k: Kind): Promise<{ path: string; expected: Buffer }> {
  const path = join(dir, `tpl.${k.ext}`);
  const units = k.units;
  if (k.qemuMade) {
    const args = ['create', '-q', '-f', k.format, path, String(units * k.unit)];
    const r = await run('qemu-img', args);
    assert.equal(r.code, 0, describeRun('qemu-img', args, r));
  }
  const d = k.qemuMade ? await Disk.open(path) : await Disk.create(path, { format: k.format, capacity: units * k.unit, ...k.create });
  // data everywhere, then zeros written into units 0, 3, 5, 6, 9, 12 and 13 (stored zeros:
  // holes low and high, runs, the first unit)
  await d.write(0, xorshiftBytes(units * k.unit, 3));
  for (const u of [0, 3, 5, 6, 9, 12, 13].filter((x) => x < units - 1)) await d.write(u * k.unit, Buffer.alloc(k.unit));
  await d.close();
  return { path, expected: await readAll(path) };
}

async function killRuns(t: TestContext, k: Kind): Promise<void> {
  const dir = (await tmpDir(t, `vdkit-compact-kill-${k.label.replace(/ /g, '-')}-`)).path;
  const { path: tpl, expected } = await template(dir, k);
  const probe = join(dir, `probe.${k.ext}`);
  await copyFile(tpl, probe);
  const whole = await killedAt(probe, Infinity);
  assert.equal(whole.killed, false);
  const full = (await stat(probe)).size;
  const rnd = mulberry32(k.label.length * 7919);
  let midway = 0;
  const one = async (i: number) => {
    const p = join(dir, `run${i}.${k.ext}`);
    await copyFile(tpl, p);
    const r = await killedAt(p, 1 + Math.floor(rnd() * whole.steps!));
    assert.ok((await readAll(p)).equals(expected), `${k.label} run ${i}: content after the kill (killed: ${r.killed})`);
    const after = await checkDisk(p, { repair: false, chain: false });
    const bad = after.findings.filter((f) => f.kind === 'corruption' && !k.tolerated.includes(f.field ?? ''));
    assert.deepEqual(bad, [], `${k.label} run ${i}: no corruption after the kill`);
    if (after.findings.length > 0) midway++;
    if (k.qemuCheck && !after.findings.some((f) => f.kind === 'corruption')) {
      const args = ['check', '-q', '-f', k.format, p];
      const q = await run('qemu-img', args);
      assert.ok(q.code === 0 || q.code === 3, describeRun('qemu-img', args, q));
    }
    // a repair, then a second compact, finish the job (every fifth run: the time goes to the kills)
    if (i % 5 !== 0) return;
    const fixed = await checkDisk(p, { repair: true, chain: false });
    assert.equal(openFindings(fixed).corruptions, 0, JSON.stringify(fixed.findings));
    const d = await Disk.open(p, { singleLink: true });
    await d.image.compact!({});
    await d.close();
    assert.ok((await readAll(p)).equals(expected), `${k.label} run ${i}: content after repair and compact`);
    assert.equal((await stat(p)).size, full, `${k.label} run ${i}: the second compact gives back everything`);
    if (k.qemuCheck) {
      const args = ['check', '-q', '-f', k.format, p];
      const q = await run('qemu-img', args);
      assert.equal(q.code, 0, describeRun('qemu-img', args, q));
    }
  };
  for (let i = 0; i < RUNS; i += 4) await Promise.all([i, i + 1, i + 2, i + 3].filter((n) => n < RUNS).map(one));
  t.diagnostic(`${k.label}: whole compact ${whole.steps} steps; ${midway} of ${RUNS} kills left a half-done compact`);
}

test('compact killed at random moments keeps the content and adds no corruption', { concurrency: true }, async (t) => {
  await Promise.all(KINDS.map((k) => t.test(k.label, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    await killRuns(t, k);
  })));
});
