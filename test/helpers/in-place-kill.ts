/**
 * Shared body of the compact and defragment kill tests (test/conformance/compact-kill.test.ts,
 * defrag-kill.test.ts): the worker (compact-kill-worker.ts) runs the operation on a copy of a
 * template and is SIGKILLed when it prints a random step number; afterwards the image must open
 * read-only and read exactly the template's content (neither operation changes what a disk
 * reads), vdkit's check must find no corruption (leaks allowed; a kind may name corruption
 * fields a kill is allowed to leave because a repair or the next open clears them) and qemu-img
 * check must exit 0 or 3 where it knows the format. Every fifth run: a repair leaves no
 * corruption, an uninterrupted second run leaves the same content, the size an uninterrupted
 * first run gives, a clean qemu-img check, and whatever `finished` asserts (defragment: units
 * in virtual order).
 */
import assert from 'node:assert/strict';
import { copyFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Disk, checkDisk, openFindings } from '../../src/index.js';
import { mulberry32 } from './prng.js';
import { runKilledAtStep } from './spawn-lines.js';
import { describeRun, run, tmpDir } from './tools.js';

export type KillOp = 'compact' | 'defragment';

const WORKER = join(dirname(fileURLToPath(import.meta.url)), 'compact-kill-worker.js');
export const KILL_RUNS = 20;

/** What the shared runs need to know about one kind of image. */
export interface KillKind {
  label: string;
  format: string;
  ext: string;
  /** qemu-img check knows the format */
  qemuCheck: boolean;
  /**
   * qemu-img check errors a kill may leave where vdkit's check sees a leak (VDI: a count above
   * the map's entries, which qemu calls "allocated blocks mismatch"; vdi/NOTES.md)
   */
  qemuTolerated?: RegExp;
  /**
   * findings (fields) a kill may leave that a repair clears: a corruption there is allowed, and
   * any finding there means qemu-img cannot check the file read-only (a VHDX log to replay)
   */
  tolerated: string[];
}

/** Run the worker; SIGKILL it when it prints `step <killAt>` (never: it runs to the end). */
export async function killedAt(op: KillOp, path: string, killAt: number): Promise<{ killed: boolean; steps?: number }> {
  const r = await runKilledAtStep(WORKER, [op, path], killAt);
  if (r.killed) return { killed: true };
  const done = r.lines.find((l) => l.startsWith('done '));
  if (!done) throw new Error(`${op} worker ended without "done": ${r.lines.slice(-3).join(' | ')}`);
  return { killed: false, steps: Number(done.slice(5)) };
}

/** The whole disk of this link alone, read-only. */
export async function readAll(path: string): Promise<Buffer> {
  const d = await Disk.open(path, { readOnly: true, singleLink: true });
  try {
    return await d.read(0, d.capacity);
  } finally {
    await d.close();
  }
}

async function qemuCheck(k: KillKind, path: string, accept: number[], what: string, tolerate?: RegExp): Promise<void> {
  const args = ['check', '-q', '-f', k.format, path];
  const q = await run('qemu-img', args);
  const errors = `${q.stdout}${q.stderr}`.split('\n').filter((l) => l.trim() !== '');
  const tolerated = tolerate !== undefined && q.code === 2 && errors.length > 0 && errors.every((l) => tolerate.test(l));
  assert.ok(accept.includes(q.code ?? -1) || tolerated, `${what}: ${describeRun('qemu-img', args, q)}`);
}

export interface KillPlan {
  op: KillOp;
  /** the template image in `dir` and what it reads */
  template: (dir: string) => Promise<{ path: string; expected: Buffer }>;
  /** extra assertions after a repair and an uninterrupted run (and after the probe run) */
  finished?: (path: string, what: string) => Promise<void>;
}

/** KILL_RUNS kills of `plan.op` on copies of the kind's template, four at a time. */
export async function killRuns(t: TestContext, k: KillKind, plan: KillPlan): Promise<void> {
  const dir = (await tmpDir(t, `vdkit-${plan.op}-kill-${k.label.replace(/ /g, '-')}-`)).path;
  const { path: tpl, expected } = await plan.template(dir);
  const probe = join(dir, `probe.${k.ext}`);
  await copyFile(tpl, probe);
  const whole = await killedAt(plan.op, probe, Infinity);
  assert.equal(whole.killed, false);
  assert.ok((await readAll(probe)).equals(expected), `${k.label}: content after an uninterrupted ${plan.op}`);
  await plan.finished?.(probe, `${k.label}: uninterrupted ${plan.op}`);
  const full = (await stat(probe)).size;
  const rnd = mulberry32(k.label.length * 7919 + (plan.op === 'compact' ? 0 : 1));
  let midway = 0;
  const one = async (i: number) => {
    const p = join(dir, `run${i}.${k.ext}`);
    await copyFile(tpl, p);
    const r = await killedAt(plan.op, p, 1 + Math.floor(rnd() * whole.steps!));
    const what = `${k.label} ${plan.op} run ${i}`;
    assert.ok((await readAll(p)).equals(expected), `${what}: content after the kill (killed: ${r.killed})`);
    const after = await checkDisk(p, { repair: false, chain: false });
    const bad = after.findings.filter((f) => f.kind === 'corruption' && !k.tolerated.includes(f.field ?? ''));
    assert.deepEqual(bad, [], `${what}: no corruption after the kill`);
    if (after.findings.length > 0) midway++;
    const qemuCanCheck = !after.findings.some((f) => f.kind === 'corruption' || k.tolerated.includes(f.field ?? ''));
    if (k.qemuCheck && qemuCanCheck) await qemuCheck(k, p, [0, 3], `${what} after the kill`, k.qemuTolerated);
    // a repair, then a second run, finish the job (every fifth run: the time goes to the kills)
    if (i % 5 !== 0) return;
    const fixed = await checkDisk(p, { repair: true, chain: false });
    assert.equal(openFindings(fixed).corruptions, 0, JSON.stringify(fixed.findings));
    const d = await Disk.open(p, { singleLink: true, cowByCaller: true });
    await (plan.op === 'compact' ? d.image.maintenance().compact!({}) : d.image.maintenance().defragment!({}));
    await d.close();
    assert.ok((await readAll(p)).equals(expected), `${what}: content after repair and ${plan.op}`);
    assert.equal((await stat(p)).size, full, `${what}: the second ${plan.op} ends where an uninterrupted one does`);
    await plan.finished?.(p, `${what}, repaired and run again`);
    if (k.qemuCheck) await qemuCheck(k, p, [0], `${what}, repaired and run again`);
  };
  for (let i = 0; i < KILL_RUNS; i += 4) await Promise.all([i, i + 1, i + 2, i + 3].filter((n) => n < KILL_RUNS).map(one));
  t.diagnostic(`${k.label}: whole ${plan.op} ${whole.steps} steps; ${midway} of ${KILL_RUNS} kills left a half-done ${plan.op}`);
  assert.ok(midway > 0, `${k.label}: some kills land inside the ${plan.op} (a test whose kills all miss proves nothing)`);
}
