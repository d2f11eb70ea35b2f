/**
 * resize --shrink killed (SIGKILL) at random moments, 20 runs per format that shrinks (VMDK
 * refuses to, as VMware does): each run takes a fresh copy of a template whose data lies only in
 * the part that survives (the pattern MiB at 2 MiB; the part cut off holds zeros that qemu-io
 * wrote first, so they are allocated blocks that the shrink must drop, and in VDI the pattern's
 * block comes after them and moves down), and the worker cuts STEP bytes COUNT times. Every
 * file write, flush and truncate of the worker is numbered (admin-kill-worker.ts --steps); a run
 * kills it next to a random one of a whole run's steps, so every crash window gets its share
 * however loaded the machine is. Afterwards:
 * - vdkit opens the disk and reads exactly the state before the step that was running or after
 *   it (the size, the pattern, zeros everywhere else);
 * - qemu reads the same: qemu-img info gives one of those sizes and qemu-img compare finds the
 *   pattern and zeros. For fixed VHD this is before any repair: the shrink's switch is the one
 *   footer write at the end of the file (NOTES.md "Resize"), so qemu, which takes the size from
 *   that footer, never sees an old size with a new footer's bytes inside it. A dynamic VHD
 *   keeps a footer copy at 0 that QEMU reads; between the end footer and the copy QEMU may
 *   still see the old size (both are whole disks). A VHDX with a pending log is read by qemu
 *   only after a read-write open replayed it;
 * - after a read-write open and close (what finishes a VHDX log, rewrites a VHD footer copy)
 *   vdkit still reads the same and qemu-img info agrees on the size;
 * - vdkit check finds no corruption, qemu-img check (VDI, VHDX, qcow2) exits 0 or 3 (leaks);
 *   a leak vdkit reports (a fixed VHD's slack before its cut, VDI holes, qcow2 clusters) is
 *   taken away by a repair (all but a dynamic VHD's dropped blocks between others, which only
 *   compaction reclaims), after which vdkit and qemu read the same disk.
 * Also: a shrink of a VHD, VDI or VHDX that has a child is refused (qemu-img cannot make those
 * children, so resize-rename.test.ts covers only qcow2), as is one over data without force.
 */
import assert from 'node:assert/strict';
import { open, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Disk, DiskError, checkDisk, createChild, openFindings, resize } from '../../src/index.js';
import { MiB, PATTERN, PATTERN_AT, assertContent, checkNoCorruption, type ResizeKind as Kind } from '../helpers/admin-kill.js';
import { runKilledWhen } from '../helpers/spawn-lines.js';
import { mulberry32 } from '../helpers/prng.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';

const WORKER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/admin-kill-worker.js');
const RUNS = 20;
const COUNT = 2;
/** the size every run ends at when no step is killed */
const FINAL = 8 * MiB;


/**
 * Steps: VDI 1 MiB blocks (each step drops blocks and moves the pattern's down), VHD dynamic
 * 2 MiB blocks (a step of 3 MiB leaves a partial last block), VHDX qemu's 8 MiB blocks (the
 * step cuts inside a block: zeros written past the new end of a stored last block), qcow2 the
 * cut clusters zeroed.
 */
const KINDS: Kind[] = [
  { label: 'raw', ext: 'img', qemu: 'raw', create: [], check: false, step: 3 * MiB },
  { label: 'qcow2', ext: 'qcow2', qemu: 'qcow2', create: [], check: true, step: 3 * MiB },
  { label: 'vdi dynamic', ext: 'vdi', qemu: 'vdi', create: [], check: true, step: 2 * MiB },
  { label: 'vdi fixed', ext: 'vdi', qemu: 'vdi', create: ['-o', 'static=on'], check: true, step: 2 * MiB },
  { label: 'vhd dynamic', ext: 'vhd', qemu: 'vpc', create: ['-o', 'subformat=dynamic,force_size=on'], check: false, step: 3 * MiB },
  { label: 'vhd fixed', ext: 'vhd', qemu: 'vpc', create: ['-o', 'subformat=fixed,force_size=on'], check: false, step: 3 * MiB },
  { label: 'vhdx dynamic', ext: 'vhdx', qemu: 'vhdx', create: [], check: true, step: 3 * MiB },
  { label: 'vhdx fixed', ext: 'vhdx', qemu: 'vhdx', create: ['-o', 'subformat=fixed'], check: true, step: 3 * MiB },
];

async function ok(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r.stdout;
}

async function qemuSize(path: string, k: Kind): Promise<number> {
  const out = await ok('qemu-img', ['info', '--output=json', '-f', k.qemu, path]);
  return (JSON.parse(out) as { 'virtual-size': number })['virtual-size'];
}

/** qemu's view: a size out of `sizes`, the pattern and zeros (compare reads past the shorter as zeros) */
async function assertQemu(path: string, k: Kind, ref: string, sizes: number[], what: string): Promise<void> {
  const size = await qemuSize(path, k);
  assert.ok(sizes.includes(size), `${what}: qemu-img info size ${size}, expected one of ${sizes}`);
  const args = ['compare', '-q', '-f', 'raw', '-F', k.qemu, ref, path];
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, `${what}: ${describeRun('qemu-img', args, r)}`);
}

async function makeTemplate(path: string, k: Kind, size: number): Promise<void> {
  await ok('qemu-img', ['create', '-q', '-f', k.qemu, ...k.create, path, String(size)]);
  // allocated zeros in the part to be cut, before the pattern (VDI puts the pattern's block last)
  await ok('qemu-io', ['-f', k.qemu, '-c', `write -P 0 ${FINAL} ${size - FINAL}`, path]);
  const d = await Disk.open(path);
  await d.write(PATTERN_AT, PATTERN);
  await d.close();
}

test('resize --shrink killed at random moments leaves the old or the new disk', { concurrency: true }, async (t) => {
  await Promise.all(KINDS.map((k) => t.test(k.label, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    const dir = (await tmpDir(t)).path;
    const start = FINAL + COUNT * k.step;
    const template = join(dir, `t.${k.ext}`);
    const path = join(dir, `d.${k.ext}`);
    const ref = join(dir, 'ref.raw');
    await makeTemplate(template, k, start);
    await ok('qemu-img', ['create', '-q', '-f', 'raw', ref, String(FINAL)]);
    await ok('qemu-io', ['-f', 'raw', '-c', `write -P 0 0 ${FINAL}`, ref]);
    const fh = await open(ref, 'r+');
    await fh.write(PATTERN, 0, MiB, PATTERN_AT);
    await fh.close();
    // a fresh copy for each run; sparse, so a fixed disk costs no writes for its zeros
    const fresh = async () => {
      await rm(path, { force: true });
      await ok('cp', ['--sparse=always', template, path]);
    };
    // how many write/flush/truncate steps a whole run takes: each run kills next to a random one
    await fresh();
    const whole = await runKilledWhen(WORKER, ['--steps', 'resize', path, String(-k.step), String(COUNT)], () => false);
    const total = Number(whole.lines.find((l) => l.startsWith('steps '))?.slice(6));
    assert.ok(total > 0, `${k.label}: the shrink writes something`);
    assert.equal(await assertContent(path, [FINAL], `${k.label} whole run`), FINAL);
    const rnd = mulberry32(k.label.length * 6151);
    let killed = 0;
    let midStep = 0;
    let leaky = 0;
    for (let i = 0; i < RUNS; i++) {
      await fresh();
      const at = `step ${1 + Math.floor(rnd() * total)}`;
      const r = await runKilledWhen(WORKER, ['--steps', 'resize', path, String(-k.step), String(COUNT)], (line) => line === at);
      const done = r.lines.filter((l) => l.startsWith('done ')).map((l) => Number(l.slice(5)));
      const last = done.length ? done[done.length - 1]! : start;
      const sizes = done.length === COUNT ? [last] : [last, last - k.step];
      if (r.killed) killed++;
      const what = `${k.label} run ${i}`;
      const size = await assertContent(path, sizes, what);
      if (r.killed && size !== last) midStep++;
      // (qemu's raw is the file vdkit reads)
      if (k.qemu !== 'vhdx' && k.qemu !== 'raw') await assertQemu(path, k, ref, sizes, what);
      if (k.qemu === 'vpc' || k.qemu === 'vhdx') {
        await (await Disk.open(path)).close();
        assert.equal(await assertContent(path, [size], `${what} reopened`), size);
        if (k.qemu === 'vhdx') await assertQemu(path, k, ref, [size], `${what} reopened`);
        else assert.equal(await qemuSize(path, k), size, `${what} reopened: qemu-img info`);
      }
      if (k.check) await checkNoCorruption(path, k.qemu);
      if (k.qemu !== 'raw') {
        const report = await checkDisk(path, { repair: false });
        assert.equal(openFindings(report).corruptions, 0, `${what}: ${JSON.stringify(report.findings)}`);
        // what a kill leaves is at worst a leak; a repair takes away what it can (not the space
        // of a dropped VHD block between others: that is compaction) without changing the disk
        if (openFindings(report).leaks > 0) {
          leaky++;
          const fixed = await checkDisk(path, { repair: true });
          const left = fixed.findings.filter((f) => f.kind !== 'warning' && !f.repaired && !(k.qemu === 'vpc' && /compaction/.test(f.message)));
          assert.deepEqual(left, [], `${what}: repair: ${JSON.stringify(fixed.findings)}`);
          assert.equal(await assertContent(path, [size], `${what} repaired`), size);
          if (k.qemu !== 'vhdx') await assertQemu(path, k, ref, [size], `${what} repaired`);
          if (k.check) await checkNoCorruption(path, k.qemu);
        }
      }
    }
    t.diagnostic(`${killed} of ${RUNS} shrinks killed (a whole run: ${total} steps), ${midStep} of them after a step's switch, before its end; ${leaky} left a leak that a repair took away`);
    // a kill next to the last step may come after the worker ended
    assert.ok(killed >= RUNS / 2, 'most runs were killed');
  })));
});

test('shrinking a VHD, VDI or VHDX that has a child is refused, and so is one over data without force', { concurrency: true }, async (t) => {
  await Promise.all(KINDS.filter((k) => /dynamic/.test(k.label)).map((k) => t.test(k.label, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    const dir = (await tmpDir(t)).path;
    const base = join(dir, `b.${k.ext}`);
    await makeTemplate(base, k, 16 * MiB);
    const refused = async (p: Promise<unknown>, re: RegExp, what: string) => {
      await assert.rejects(p, (e: unknown) => e instanceof DiskError && e.code === 'CANTSHRINK' && re.test(e.message), what);
      assert.equal(await assertContent(base, [16 * MiB], `${what}: unchanged`), 16 * MiB);
    };
    // the pattern lies at 2..3 MiB
    await refused(resize(base, 2 * MiB, { shrink: true }), /holds data/, 'over data');
    const child = join(dir, `c.${k.ext}`);
    await (await createChild(base, child)).close();
    await refused(resize(base, FINAL, { shrink: true, force: true }), /child/, 'with a child');
    // the child still reads its parent's whole disk
    const c = await Disk.open(child, { readOnly: true });
    assert.equal(c.capacity, 16 * MiB);
    assert.ok((await c.read(PATTERN_AT, MiB)).equals(PATTERN));
    await c.close();
  })));
});
