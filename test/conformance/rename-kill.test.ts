/**
 * rename killed (SIGKILL) at random moments, 20 runs per format, for the formats admin-kill.test.ts
 * does not rename: raw (with a qcow2 child), monolithicFlat VMDK, VDI, VHD and VHDX (each with
 * a child of its own format). The worker renames the parent a -> b -> a -> b; a timer kills it
 * anywhere in that work. Afterwards at least one of the two names holds the whole disk (the old
 * data, nothing else, the same size), the child still reads the parent's data through its chain,
 * vdkit's check finds no corruption in the parent or the child (raw: nothing to check), and
 * qemu-img check agrees where it knows the format.
 *
 * Files a stopped rename leaves that no disk uses (monolithicFlat: the extent under the other
 * name, a temporary descriptor) must each be found by `check` of the disk the child uses, as a
 * leak, and removed by a repair; afterwards the folder holds only the disk(s) and the child.
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

/** the files of the disk at `path` (its own link only) */
async function filesOf(path: string): Promise<string[]> {
  const d = await Disk.open(path, { readOnly: true, singleLink: true });
  try {
    return (await d.info()).files;
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
        // A stopped rename leaves both names (hard links to the same files, two whole disks), or
        // files of the name that is going or coming that no disk uses (a monolithicFlat extent,
        // a temporary descriptor). Every such file is a leak that check finds on the disk the
        // child uses, and a repair removes; then the folder holds the disks and the child only.
        const keep = parent.endsWith(`a.${k.ext}`) ? a : b;
        const other = keep === a ? b : a;
        const expected = new Set([...(await filesOf(keep)), ...(await filesOf(childPath))]);
        if (at.length === 2) {
          bothNames++;
          for (const f of await filesOf(other)) expected.add(f);
        }
        const stray = names.map((n) => join(dir, n)).filter((f) => !expected.has(f)).sort();
        // (raw cannot be checked; a one-file disk leaves nothing: asserted by the empty list)
        const found = k.check ? (await checkDisk(keep, { repair: false, chain: false })).findings.filter((f) => f.struct === 'folder') : [];
        assert.deepEqual(found.map((f) => join(dir, f.field ?? '')).sort(), stray, `${k.label} run ${i}: check finds every file a stopped rename left`);
        assert.ok(found.every((f) => f.kind === 'leak'));
        strays += stray.length;
        if (stray.length > 0) {
          const fixed = await checkDisk(keep, { repair: true, chain: false });
          assert.ok(fixed.findings.filter((f) => f.struct === 'folder').every((f) => f.repaired), `${k.label} run ${i}: a repair removes them`);
          assert.deepEqual((await readdir(dir)).map((n) => join(dir, n)).sort(), [...expected].sort(), `${k.label} run ${i}: no file but the disks' and the child's is left`);
        }
        // keep the name the child uses; the worker starts again from a
        if (at.length === 2) for (const f of await filesOf(other)) if (!(await filesOf(keep)).includes(f)) await rm(f);
        if (keep === b) await rename(b, a);
        assert.deepEqual((await readdir(dir)).sort(), [...(await filesOf(a)), ...(await filesOf(childPath))].map((f) => f.slice(dir.length + 1)).sort(), `${k.label} run ${i}: the folder before the next run`);
      }
      stats.killed += killed;
      stats.bothNames += bothNames;
      stats.strays += strays;
      stats.replayed += replayed;
      stats.probeMs = Math.max(stats.probeMs, probe.ms);
    }));
    t.diagnostic(`${k.label}: 3 renames take ${stats.probeMs.toFixed(0)} ms; ${stats.killed} of ${RUNS} killed, ${stats.bothNames} left both names, ${stats.strays} stray files (found and removed by check --repair); ${stats.replayed} children needed a log replay`);
  })));
});

/** the pid of a process that has exited */
async function deadPid(): Promise<number> {
  const { spawn } = await import('node:child_process');
  const p = spawn(process.execPath, ['-e', '0']);
  await new Promise((r) => p.on('exit', r));
  return p.pid!;
}

test('the two states a stopped multi-file rename can leave: check finds the files no disk uses, a repair or the next rename removes them, nothing else', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-rename-leftovers-')).path;
  const at = (n: string) => join(dir, n);
  const list = async () => (await readdir(dir)).sort();
  const dead = await deadPid();
  for (const type of ['monolithicFlat', 'twoGbMaxExtentFlat'] as const) {
    for (const f of await readdir(dir)) await rm(at(f));
    const d = await Disk.create(at('a.vmdk'), { capacity: SIZE, format: 'vmdk', type });
    await d.write(PATTERN_AT, PATTERN);
    await d.close();
    const aFiles = (await filesOf(at('a.vmdk'))).map((f) => f.slice(dir.length + 1)).sort();
    assert.ok(aFiles.length >= 2 && aFiles.every((f) => f.startsWith('a')), `${type}: ${aFiles}`);
    const extents = aFiles.filter((f) => f !== 'a.vmdk');
    const renamedExtents = extents.map((f) => 'b' + f.slice(1));
    // look-alikes that must stay: another disk's whole set (x.vmdk exists), a file of a stem with
    // no top file that is not one of a's files, a temporary file of a live process
    const { link, writeFile, copyFile } = await import('node:fs/promises');
    await copyFile(at(extents[0]!), at('y' + extents[0]!.slice(1)));
    await writeFile(at(`b.vmdk.vdkit-tmp-${process.ppid}`), 'live');

    // state 1: killed after the extents got their new names, before the new descriptor was in place
    for (const [i, e] of extents.entries()) await link(at(e), at(renamedExtents[i]!));
    await writeFile(at(`b.vmdk.vdkit-tmp-${dead}`), 'half a descriptor');
    const keepers = [...aFiles, 'y' + extents[0]!.slice(1), `b.vmdk.vdkit-tmp-${process.ppid}`].sort();
    const leftovers = [...renamedExtents, `b.vmdk.vdkit-tmp-${dead}`].sort();
    const report = await checkDisk(at('a.vmdk'), { repair: false });
    assert.deepEqual(report.findings.map((f) => [f.kind, f.struct, f.field]).sort(), leftovers.map((n) => ['leak', 'folder', n]));
    assert.deepEqual(openFindings(report), { corruptions: 0, leaks: leftovers.length });
    const dry = await checkDisk(at('a.vmdk'), { repair: true, dryRun: true });
    assert.ok(dry.findings.every((f) => f.wouldRepair && !f.repaired));
    assert.deepEqual(await list(), [...keepers, ...leftovers].sort(), `${type}: a dry run removes nothing`);
    const fixed = await checkDisk(at('a.vmdk'), { repair: true });
    assert.ok(fixed.findings.length === leftovers.length && fixed.findings.every((f) => f.repaired));
    assert.deepEqual(await list(), keepers, `${type}: a repair removes the leftovers, only them`);
    await assertContent(at('a.vmdk'), `${type} after the repair`);
    assert.deepEqual((await checkDisk(at('a.vmdk'), { repair: false })).findings, []);

    // state 1 again, cleaned by the next rename instead (to a third name)
    for (const [i, e] of extents.entries()) await link(at(e), at(renamedExtents[i]!));
    await rename(at('a.vmdk'), at('c.vmdk'));
    const cFiles = aFiles.map((f) => 'c' + f.slice(1));
    assert.deepEqual(await list(), [...cFiles, 'y' + extents[0]!.slice(1), `b.vmdk.vdkit-tmp-${process.ppid}`].sort(), `${type}: the next rename removed the leftovers`);
    await rename(at('c.vmdk'), at('b.vmdk'));

    // state 2: killed after the old descriptor went, before the old extents did
    for (const e of extents) await link(at('b' + e.slice(1)), at(e));
    const report2 = await checkDisk(at('b.vmdk'), { repair: true });
    assert.deepEqual(report2.findings.map((f) => [f.kind, f.field, f.repaired]).sort(), extents.map((n) => ['leak', n, true]).sort());
    assert.deepEqual(await list(), [...aFiles.map((f) => 'b' + f.slice(1)), 'y' + extents[0]!.slice(1), `b.vmdk.vdkit-tmp-${process.ppid}`].sort());
    await assertContent(at('b.vmdk'), `${type} state 2 after the repair`);

    // both names whole (killed after the new descriptor, before the old one went): two disks, no leftovers
    for (const e of extents) await link(at('b' + e.slice(1)), at(e));
    await writeFile(at('a.vmdk'), (await import('node:fs')).readFileSync(at('b.vmdk'), 'utf8').replaceAll('"b', '"a'));
    assert.deepEqual((await checkDisk(at('a.vmdk'), { repair: false })).findings, []);
    assert.deepEqual((await checkDisk(at('b.vmdk'), { repair: false })).findings, []);
  }
});
