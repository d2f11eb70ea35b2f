/**
 * rename killed (SIGKILL) at random moments, 20 runs per format, for the formats admin-kill.test.ts
 * does not rename: raw (with a qcow2 child), monolithicFlat VMDK, VDI, VHD and VHDX (each with
 * a child of its own format). The worker renames the parent a -> b -> a -> b; a timer kills it
 * anywhere in that work. Afterwards at least one of the two names holds the whole disk (the old
 * data, nothing else, the same size), the child still reads the parent's data through its chain,
 * vdkit's check finds no corruption in the parent or the child (raw: nothing to check), and
 * qemu-img check agrees where it knows the format.
 *
 * VHDX: re-pointing the child's parent locator goes through the child's log, and a session's
 * log is marked applied only at close, so a kill there leaves a log that the next read-write
 * open replays (check reports it on field `logGuid`, as in compact-kill.test.ts): allowed in
 * the child, and a repair then leaves it clean.
 */
import assert from 'node:assert/strict';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Disk, checkDisk, createChild, openFindings, rename } from '../../src/index.js';
import { runKilledAfter } from '../helpers/spawn-lines.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';

const WORKER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/admin-kill-worker.js');
const MiB = 2 ** 20;
const RUNS = 20;
const SIZE = 8 * MiB;
const PATTERN = xorshiftBytes(MiB, 91);
const PATTERN_AT = 2 * MiB;

interface Kind {
  label: string;
  ext: string;
  create: Record<string, unknown>;
  /** the child's format and extension */
  child: { format: string; ext: string };
  /** qemu-img's name for the parent's format when qemu-img check understands it */
  qemu?: string;
  /** vdkit can check it */
  check: boolean;
  /** corruption findings (fields) a kill may leave in the child that a repair clears (see the header) */
  childTolerated: string[];
}

const KINDS: Kind[] = [
  { label: 'raw', ext: 'img', create: { format: 'raw' }, child: { format: 'qcow2', ext: 'qcow2' }, check: false, childTolerated: [] },
  { label: 'vmdk monolithicFlat', ext: 'vmdk', create: { format: 'vmdk', type: 'monolithicFlat' }, child: { format: 'vmdk', ext: 'vmdk' }, qemu: 'vmdk', check: true, childTolerated: [] },
  { label: 'vdi', ext: 'vdi', create: { format: 'vdi' }, child: { format: 'vdi', ext: 'vdi' }, qemu: 'vdi', check: true, childTolerated: [] },
  { label: 'vhd', ext: 'vhd', create: { format: 'vhd' }, child: { format: 'vhd', ext: 'vhd' }, check: true, childTolerated: [] },
  { label: 'vhdx', ext: 'vhdx', create: { format: 'vhdx', blockSize: MiB }, child: { format: 'vhdx', ext: 'vhdx' }, qemu: 'vhdx', check: true, childTolerated: ['logGuid'] },
];

/** the pattern at PATTERN_AT, zeros everywhere else */
async function assertContent(path: string, what: string): Promise<void> {
  const d = await Disk.open(path, { readOnly: true });
  try {
    assert.equal(d.capacity, SIZE, `${what}: size`);
    const all = await d.read(0, SIZE);
    assert.ok(all.subarray(PATTERN_AT, PATTERN_AT + MiB).equals(PATTERN), `${what}: the old data changed`);
    all.fill(0, PATTERN_AT, PATTERN_AT + MiB);
    assert.ok(all.equals(Buffer.alloc(SIZE)), `${what}: bytes outside the pattern are not zeros`);
  } finally {
    await d.close();
  }
}

/** vdkit's check (and qemu-img's for `qemu`): no corruption but the tolerated; whether any tolerated one was found */
async function noCorruption(path: string, qemu: string | undefined, tolerated: string[], what: string): Promise<boolean> {
  const r = await checkDisk(path, { repair: false, chain: false });
  const bad = r.findings.filter((f) => f.kind === 'corruption' && !tolerated.includes(f.field ?? ''));
  assert.deepEqual(bad, [], `${what}: vdkit check`);
  if (qemu) {
    const args = ['check', '-q', '-f', qemu, path];
    const q = await run('qemu-img', args);
    assert.ok(q.code === 0 || q.code === 3, describeRun('qemu-img', args, q));
  }
  return r.findings.some((f) => f.kind === 'corruption');
}

test('rename (with a child) killed at random moments leaves a whole disk its child reaches: raw, flat, vdi, vhd, vhdx', { concurrency: true }, async (t) => {
  await Promise.all(KINDS.map((k) => t.test(k.label, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    const top = (await tmpDir(t, `vdkit-rename-kill-${k.ext}-`)).path;
    const stats = { killed: 0, bothNames: 0, strays: 0, replayed: 0, probeMs: 0 };
    // two parent/child pairs side by side, 10 runs each: most of a run is waiting for processes
    await Promise.all([0, 1].map(async (pair) => {
      const dir = join(top, String(pair));
      await mkdir(dir);
      const a = join(dir, `a.${k.ext}`);
      const b = join(dir, `b.${k.ext}`);
      const childPath = join(dir, `child.${k.child.ext}`);
      const d = await Disk.create(a, { capacity: SIZE, ...k.create });
      await d.write(PATTERN_AT, PATTERN);
      await d.close();
      await (await createChild(a, childPath, { format: k.child.format })).close();
      // how long three renames take here: kills land anywhere in [0, 1.2 x that]
      const probe = await runKilledAfter(WORKER, ['rename', a, b, '3'], Infinity);
      assert.deepEqual(probe.lines.filter((l) => l.startsWith('done ')), [`done ${b}`, `done ${a}`, `done ${b}`]);
      await rename(b, a);
      const rnd = mulberry32(k.label.length * 65537 + k.ext.length * 31 + pair);
      let killed = 0;
      let bothNames = 0;
      let strays = 0;
      let replayed = 0;
      for (let i = pair; i < RUNS; i += 2) {
        const r = await runKilledAfter(WORKER, ['rename', a, b, '3'], rnd() * probe.ms * 1.2);
        if (r.killed) killed++;
        const names = await readdir(dir);
        const at = [a, b].filter((p) => names.includes(p.slice(dir.length + 1)));
        assert.ok(at.length >= 1, `${k.label} run ${i}: the disk has no name left: ${names}`);
        for (const p of at) await assertContent(p, `${k.label} run ${i} ${p}`);
        const child = await Disk.open(childPath, { readOnly: true });
        const parent = (await child.info()).chain?.[1] ?? '';
        assert.ok((await child.read(PATTERN_AT, MiB)).equals(PATTERN), `${k.label} run ${i}: the child no longer reads its parent`);
        await child.close();
        assert.ok(at.some((p) => parent.endsWith(p.slice(dir.length))), `${k.label} run ${i}: the child's parent ${parent} is none of ${at}`);
        if (k.check) for (const p of at) await noCorruption(p, k.qemu, [], `${k.label} run ${i} ${p}`);
        if (await noCorruption(childPath, undefined, k.childTolerated, `${k.label} run ${i} child`)) {
          replayed++;
          const fixed = await checkDisk(childPath, { repair: true, chain: false });
          assert.equal(openFindings(fixed).corruptions, 0, `${k.label} run ${i}: a repair of the child: ${JSON.stringify(fixed.findings)}`);
          await noCorruption(childPath, undefined, [], `${k.label} run ${i} child after a repair`);
        }
        // a stopped rename leaves both names (hard links to the same files), or stray extent
        // files of the name that went: keep the name the child uses, drop every file of the other
        if (at.length === 2) bothNames++;
        const keep = parent.endsWith(`a.${k.ext}`) ? 'a' : 'b';
        for (const f of names.filter((n) => n.startsWith(keep === 'a' ? 'b' : 'a'))) {
          if (at.length === 1) strays++;
          await rm(join(dir, f));
        }
        // the worker starts again from a
        if (keep === 'b') await rename(b, a);
      }
      stats.killed += killed;
      stats.bothNames += bothNames;
      stats.strays += strays;
      stats.replayed += replayed;
      stats.probeMs = Math.max(stats.probeMs, probe.ms);
    }));
    t.diagnostic(`${k.label}: 3 renames take ${stats.probeMs.toFixed(0)} ms; ${stats.killed} of ${RUNS} killed, ${stats.bothNames} left both names, ${stats.strays} stray files; ${stats.replayed} children needed a log replay`);
  })));
});
