/**
 * resize and rename killed (SIGKILL) at random moments, 20 runs per format: afterwards the disk
 * opens with exactly the content it had before the operation or after it (the old data, zeros
 * beyond), under exactly one name for rename, a child still reaches its parent, and qemu-img
 * check finds no corruption. The worker repeats the operation so a kill lands inside one.
 */
import assert from 'node:assert/strict';
import { readdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Disk, checkDisk, openFindings, rename } from '../../src/index.js';
import { MiB, PATTERN, PATTERN_AT, assertContent, checkNoCorruption, vdkitNoCorruption, type ResizeKind as Kind } from '../helpers/admin-kill.js';
import { runKilledWhen } from '../helpers/spawn-lines.js';
import { mulberry32 } from '../helpers/prng.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';

const WORKER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/admin-kill-worker.js');
const RUNS = 20;


const KINDS: Kind[] = [
  { label: 'raw', ext: 'img', qemu: 'raw', create: [], check: false, step: 3 * MiB },
  // 512-byte clusters: every step grows the L1 table
  { label: 'qcow2', ext: 'qcow2', qemu: 'qcow2', create: ['-o', 'cluster_size=512'], check: true, step: 3 * MiB },
  // 24 MiB steps add grain directory entries (32 MiB each), so the directories move
  { label: 'vmdk monolithicSparse', ext: 'vmdk', qemu: 'vmdk', create: ['-o', 'subformat=monolithicSparse'], check: true, step: 24 * MiB },
  { label: 'vmdk twoGbMaxExtentSparse', ext: 'vmdk', qemu: 'vmdk', create: ['-o', 'subformat=twoGbMaxExtentSparse'], check: true, step: 3 * MiB },
  { label: 'vmdk monolithicFlat', ext: 'vmdk', qemu: 'vmdk', create: ['-o', 'subformat=monolithicFlat'], check: true, step: 3 * MiB },
];

/**
 * Resize only (qemu-img cannot give VHD, VDI or VHDX a backing file for the rename test); qemu-img
 * check does not read VHD, so vdkit's check (in-process) looks for corruption there.
 * VHD dynamic: 2 MiB blocks, 24 MiB steps take the BAT past its first sector, so the blocks
 * after it move to the end. VDI: qemu's map sector holds 128 entries (128 MiB): 1 MiB steps.
 */
const RESIZE_ONLY: Kind[] = [
  { label: 'vhd dynamic', ext: 'vhd', qemu: 'vpc', create: ['-o', 'subformat=dynamic,force_size=on'], check: false, step: 24 * MiB },
  { label: 'vhd fixed', ext: 'vhd', qemu: 'vpc', create: ['-o', 'subformat=fixed,force_size=on'], check: false, step: 3 * MiB },
  { label: 'vdi dynamic', ext: 'vdi', qemu: 'vdi', create: [], check: true, step: MiB },
  { label: 'vdi fixed', ext: 'vdi', qemu: 'vdi', create: ['-o', 'static=on'], check: true, step: MiB },
  // 3 MiB steps keep the last block partial, so it moves to full size at most grows
  { label: 'vhdx dynamic', ext: 'vhdx', qemu: 'vhdx', create: [], check: true, step: 3 * MiB },
  { label: 'vhdx fixed', ext: 'vhdx', qemu: 'vhdx', create: ['-o', 'subformat=fixed'], check: true, step: 3 * MiB },
];

async function qemu(args: string[]): Promise<void> {
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, describeRun('qemu-img', args, r));
}

async function makeDisk(path: string, k: Kind, size: number): Promise<void> {
  await qemu(['create', '-q', '-f', k.qemu, ...k.create, path, String(size)]);
  const d = await Disk.open(path);
  await d.write(PATTERN_AT, PATTERN);
  await d.close();
}

// the formats run side by side: most of a run is the worker's start-up, not the disk work
test('resize killed at random moments leaves the old or the new disk', { concurrency: true }, async (t) => {
  await Promise.all([...KINDS, ...RESIZE_ONLY].map((k) => t.test(k.label, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    const dir = (await tmpDir(t)).path;
    const path = join(dir, `d.${k.ext}`);
    await makeDisk(path, k, 8 * MiB);
    const rnd = mulberry32(k.label.length * 7919);
    let size = 8 * MiB;
    let killed = 0;
    for (let run = 0; run < RUNS; run++) {
      const delay = rnd() * 60;
      let started = 0;
      const r = await runKilledWhen(WORKER, ['resize', path, String(k.step), '4'], (line) => {
        if (line === 'ready') started = Date.now();
        // the first line after `delay` ms is the kill moment, plus a random busy-wait within it
        if (started && Date.now() - started >= delay) {
          const until = Date.now() + rnd() * 4;
          while (Date.now() < until);
          return true;
        }
        return false;
      });
      const done = r.lines.filter((l) => l.startsWith('done ')).map((l) => Number(l.slice(5)));
      if (r.killed) killed++;
      const last = done.length ? done[done.length - 1]! : size;
      await assertContent(path, [last, last + k.step], `${k.label} run ${run}`);
      if (k.qemu === 'vpc' || k.qemu === 'vhdx') {
        // what a read-write open does first: replay a pending VHDX log (qemu-img check will not
        // open a file with one), rewrite a VHD footer copy from the footer at the end
        await (await Disk.open(path)).close();
        await assertContent(path, [last, last + k.step], `${k.label} run ${run} reopened`);
      }
      if (k.check) await checkNoCorruption(path, k.qemu);
      if (k.qemu !== 'raw') await vdkitNoCorruption(path, `${k.label} run ${run}`);
      const d = await Disk.open(path, { readOnly: true });
      size = d.capacity;
      await d.close();
    }
    t.diagnostic(`${killed} of ${RUNS} resizes killed; ${size / MiB} MiB at the end`);
    assert.ok(size > 8 * MiB, 'some resizes finished');
  })));
});

test('VDI resize that moves the block map (killed at random moments, 20 runs) leaves the old or the new disk', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const path = join(dir, 'd.vdi');
  // qemu's map is one sector (128 entries of 1 MiB): 100 -> 300 MiB moves the first data block
  // (the pattern's, written first) to the end and the map into its place
  const k: Kind = { label: 'vdi', ext: 'vdi', qemu: 'vdi', create: [], check: true, step: 200 * MiB };
  const rnd = mulberry32(4241);
  let killed = 0;
  let finished = 0;
  let midway = 0;
  for (let run = 0; run < RUNS; run++) {
    await rm(path, { force: true });
    await makeDisk(path, k, 100 * MiB);
    // one resize, so the kill moment is a busy wait after `ready` (the resize takes a few ms)
    const delay = rnd() * 30;
    const r = await runKilledWhen(WORKER, ['resize', path, String(k.step), '1'], (line) => {
      if (line !== 'ready') return false;
      const until = Date.now() + delay;
      while (Date.now() < until);
      return true;
    });
    if (r.killed) killed++;
    if (r.lines.includes(`done ${300 * MiB}`)) finished++;
    await assertContent(path, r.lines.includes(`done ${300 * MiB}`) ? [300 * MiB] : [100 * MiB, 300 * MiB], `vdi run ${run}`);
    await checkNoCorruption(path, 'vdi');
    await vdkitNoCorruption(path, `vdi run ${run}`);
    if (openFindings(await checkDisk(path, { repair: false })).leaks > 0) midway++;
  }
  t.diagnostic(`${killed} of ${RUNS} resizes killed, ${finished} finished, ${midway} left a leak (stopped after a block copy, before the header)`);
});

test('rename (with a child) killed at random moments leaves a whole disk its child reaches', { concurrency: true }, async (t) => {
  await Promise.all(KINDS.filter((x) => x.label !== 'raw' && x.label !== 'vmdk monolithicFlat').map((k) => t.test(k.label, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    const dir = (await tmpDir(t)).path;
    const a = join(dir, `a.${k.ext}`);
    const b = join(dir, `b.${k.ext}`);
    await makeDisk(a, k, 8 * MiB);
    await qemu(['create', '-q', '-f', k.qemu, '-b', `a.${k.ext}`, '-F', k.qemu, join(dir, `child.${k.ext}`)]);
    const rnd = mulberry32(k.label.length * 104729);
    for (let run = 0; run < RUNS; run++) {
      const delay = rnd() * 80;
      let started = 0;
      await runKilledWhen(WORKER, ['rename', a, b, '3'], (line) => {
        if (line === 'ready') started = Date.now();
        return !!started && Date.now() - started >= delay;
      });
      const names = await readdir(dir);
      const at = [a, b].filter((p) => names.includes(p.slice(dir.length + 1)));
      assert.ok(at.length >= 1, `run ${run}: the disk has no name left: ${names}`);
      for (const p of at) await assertContent(p, [8 * MiB], `${k.label} run ${run} ${p}`);
      // the child reaches a whole parent through its chain
      const child = await Disk.open(join(dir, `child.${k.ext}`), { readOnly: true });
      assert.ok((await child.read(PATTERN_AT, MiB)).equals(PATTERN), `run ${run}: the child no longer reads its parent`);
      await child.close();
      if (k.check) for (const p of at) await checkNoCorruption(p, k.qemu);
      // a stopped rename leaves both names (hard links to the same files): drop the one the child does not use
      if (at.length === 2) {
        const c = await Disk.open(join(dir, `child.${k.ext}`), { readOnly: true });
        const parent = (await c.info()).chain?.[1] ?? '';
        await c.close();
        const extra = parent.endsWith(`a.${k.ext}`) ? 'b' : 'a';
        for (const f of names.filter((n) => n.startsWith(extra))) await rm(join(dir, f));
      }
      // the worker starts again from a
      if (!(await readdir(dir)).includes(`a.${k.ext}`)) await rename(b, a);
    }
  })));
});
