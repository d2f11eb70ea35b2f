/**
 * defragment of VHDX and qcow2 killed (SIGKILL) at random moments, 20 runs per kind from a
 * fragmented template: afterwards the image reads exactly the content it had (defragment never
 * changes what a disk reads), vdkit's check finds no corruption (leaks allowed) and qemu-img
 * check exits 0 or 3 (leaks); in every fifth run a repair and then an uninterrupted defragment
 * leave the data in virtual order, the same content, the size an uninterrupted defragment of
 * the template gives, and qemu-img check clean (exit 0).
 *
 * VHDX: BAT changes go through the log and a session's log is marked applied only when the
 * file is cut or closed, so a kill leaves a log that the next read-write open replays (check
 * reports it on field `logGuid`; QEMU refuses such an image without `check -r all`): allowed,
 * as in compact-kill, and replayed by the repair.
 * qcow2: the 512-byte-cluster kind needs new refcount blocks for the room past the end of the
 * file (each covers 128 KiB), which the end of the run drops again.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Disk, checkDisk, openFindings } from '../../src/index.js';
import { qcow2InOrder, vhdxInOrder } from '../helpers/defrag-layout.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;
const KiB = 1024;
const RUNS = 20;
const WORKER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/compact-kill-worker.js');

interface Kind {
  label: string;
  format: 'vhdx' | 'qcow2';
  /** makes the fragmented template (its units written out of virtual order) */
  make: (path: string) => Promise<void>;
  /** whether the data sits in virtual order, read from the file with plain fs */
  inOrder: (path: string) => Promise<boolean>;
  /** corruption findings (fields) a kill may leave that a repair clears (see the header) */
  tolerated: string[];
}

async function ok(cmd: string, args: string[]): Promise<void> {
  const r = await run(cmd, args);
  assert.equal(r.code, 0, describeRun(cmd, args, r));
}

/** qemu-made: units (all but every fourth) written by qemu-io from the last to the first */
const qemuReverse = (format: string, unit: number, units: number) => async (path: string) => {
  await ok('qemu-img', ['create', '-q', '-f', format, path, String(unit * units)]);
  const cmds: string[] = [];
  for (let u = units - 1; u >= 0; u--) if (u % 4 !== 1) cmds.push('-c', `write -P ${(u % 250) + 1} ${u * unit} ${unit}`);
  await ok('qemu-io', ['-f', format, ...cmds, path]);
};

/** vdkit-made: units (all but every fourth) written in a random order */
const vdkitRandom = (format: string, create: Record<string, unknown>, unit: number, units: number, seed: number) => async (path: string) => {
  const rnd = mulberry32(seed);
  const d = await Disk.create(path, { format, capacity: unit * units, ...create });
  for (const u of [...Array(units).keys()].filter((x) => x % 4 !== 3).sort(() => rnd() - 0.5)) await d.write(u * unit, xorshiftBytes(unit, seed + u));
  await d.close();
};

const KINDS: Kind[] = [
  { label: 'qcow2 qemu reverse', format: 'qcow2', make: qemuReverse('qcow2', 64 * KiB, 96), inOrder: qcow2InOrder, tolerated: [] },
  { label: 'qcow2 512-byte clusters', format: 'qcow2', make: vdkitRandom('qcow2', { clusterSize: 512 }, 512, 256, 21), inOrder: qcow2InOrder, tolerated: [] },
  { label: 'vhdx', format: 'vhdx', make: vdkitRandom('vhdx', { blockSize: MiB }, MiB, 32, 22), inOrder: (p) => vhdxInOrder(p), tolerated: ['logGuid'] },
];

/** Run the worker; SIGKILL it when it prints `step <killAt>` (never: it runs to the end). */
function killedAt(path: string, killAt: number): Promise<{ killed: boolean; steps?: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [WORKER, 'defragment', path], { stdio: ['ignore', 'pipe', 'pipe'] });
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
      else reject(new Error(`defragment worker failed (${code}): ${err}`));
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

async function qemuCheck(k: Kind, path: string, codes: number[]): Promise<void> {
  const args = ['check', '-q', '-f', k.format, path];
  const q = await run('qemu-img', args);
  assert.ok(codes.includes(q.code ?? -1), describeRun('qemu-img', args, q));
}

async function killRuns(t: TestContext, k: Kind): Promise<void> {
  const dir = (await tmpDir(t, `vdkit-defrag-kill-${k.label.replace(/ /g, '-')}-`)).path;
  const tpl = join(dir, `tpl.${k.format}`);
  await k.make(tpl);
  const expected = await readAll(tpl);
  assert.equal(await k.inOrder(tpl), false, `${k.label}: the template is fragmented`);
  const probe = join(dir, `probe.${k.format}`);
  await copyFile(tpl, probe);
  const whole = await killedAt(probe, Infinity);
  assert.equal(whole.killed, false);
  assert.equal(await k.inOrder(probe), true, `${k.label}: an uninterrupted defragment puts the data in order`);
  const full = (await stat(probe)).size;
  assert.ok(full <= (await stat(tpl)).size);
  const rnd = mulberry32(k.label.length * 7919);
  let midway = 0;
  const one = async (i: number) => {
    const p = join(dir, `run${i}.${k.format}`);
    await copyFile(tpl, p);
    const r = await killedAt(p, 1 + Math.floor(rnd() * whole.steps!));
    assert.ok((await readAll(p)).equals(expected), `${k.label} run ${i}: content after the kill (killed: ${r.killed})`);
    const after = await checkDisk(p, { repair: false, chain: false });
    const bad = after.findings.filter((f) => f.kind === 'corruption' && !k.tolerated.includes(f.field ?? ''));
    assert.deepEqual(bad, [], `${k.label} run ${i}: no corruption after the kill`);
    if (after.findings.length > 0) midway++;
    if (!after.findings.some((f) => f.kind === 'corruption')) await qemuCheck(k, p, [0, 3]);
    // a repair, then an uninterrupted defragment, finish the job (every fifth run: the time goes to the kills)
    if (i % 5 !== 0) return;
    const fixed = await checkDisk(p, { repair: true, chain: false });
    assert.equal(openFindings(fixed).corruptions, 0, JSON.stringify(fixed.findings));
    const d = await Disk.open(p, { singleLink: true });
    await d.image.defragment!({});
    await d.close();
    assert.ok((await readAll(p)).equals(expected), `${k.label} run ${i}: content after repair and defragment`);
    assert.equal(await k.inOrder(p), true, `${k.label} run ${i}: data in virtual order after repair and defragment`);
    assert.equal((await stat(p)).size, full, `${k.label} run ${i}: the size an uninterrupted defragment gives`);
    await qemuCheck(k, p, [0]);
  };
  for (let i = 0; i < RUNS; i += 4) await Promise.all([i, i + 1, i + 2, i + 3].filter((n) => n < RUNS).map(one));
  t.diagnostic(`${k.label}: whole defragment ${whole.steps} steps; ${midway} of ${RUNS} kills left findings (a half-done defragment)`);
}

test('defragment of VHDX and qcow2 killed at random moments keeps the content and adds no corruption', { concurrency: true }, async (t) => {
  await Promise.all(KINDS.map((k) => t.test(k.label, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    await killRuns(t, k);
  })));
});
