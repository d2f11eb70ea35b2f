import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Disk, DiskError } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { commit, mergeIntoTop } from '../../src/ops/commit.js';
import { rebase } from '../../src/ops/rebase.js';
import { describeChain } from '../../src/ops/chain-list.js';
import { tmpDir } from '../helpers/tools.js';
import { runKilledWhen } from '../helpers/spawn-lines.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';

const MiB = 2 ** 20;
const CAP = 16 * MiB;
const RUNNER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/commit-runner.js');

/** base <- mid <- top, each holding data of its own (partly overlapping), plus the flattened model */
async function threeLinks(dir: string, seed = 1): Promise<{ base: string; mid: string; top: string; model: Buffer }> {
  const base = join(dir, 'base.vmdk');
  const d = await Disk.create(base, { capacity: CAP });
  await d.write(0, xorshiftBytes(4 * MiB, seed));
  await d.close();
  const m = await createChild(base, join(dir, 'mid.vmdk'), { type: 'twoGbMaxExtentSparse' });
  await m.write(3 * MiB + 5, xorshiftBytes(3 * MiB, seed + 1));
  await m.write(12 * MiB, xorshiftBytes(700, seed + 2));
  await m.close();
  const t = await createChild(join(dir, 'mid.vmdk'), join(dir, 'top.vmdk'));
  await t.write(5 * MiB - 100, xorshiftBytes(2 * MiB, seed + 3));
  await t.write(CAP - 10, xorshiftBytes(10, seed + 4));
  const model = await t.read(0, CAP);
  await t.close();
  return { base, mid: join(dir, 'mid.vmdk'), top: join(dir, 'top.vmdk'), model };
}

async function readAll(path: string): Promise<Buffer> {
  const d = await Disk.open(path, { readOnly: true });
  try {
    return await d.read(0, d.capacity);
  } finally {
    await d.close();
  }
}

test('commit into the parent: the chain reads the same, the parent gets a new CID, the top is an empty child', async (t) => {
  const dir = (await tmpDir(t)).path;
  const c = await threeLinks(dir);
  const midCid = (await describeChain(c.top)).links[1]!.cid;
  const r = await commit(c.top);
  assert.equal(r.base, c.mid);
  assert.ok(r.bytesCopied >= 2 * MiB);
  assert.ok((await readAll(c.top)).equals(c.model));
  const links = (await describeChain(c.top)).links;
  assert.equal(links.length, 3);
  assert.notEqual(links[1]!.cid, midCid);
  assert.equal(links[0]!.parentCid, links[1]!.cid);
  assert.equal(links[0]!.allocatedBytes, 0, 'the top is emptied');
  assert.ok(!(await readdir(dir)).some((f) => f.endsWith('.vdkit-commit')));
});

test('commit down to the base removes the links in between; --drop removes the top too', async (t) => {
  const dir = (await tmpDir(t)).path;
  const c = await threeLinks(dir);
  await commit(c.top, { base: c.base });
  assert.ok((await readAll(c.top)).equals(c.model));
  assert.equal((await describeChain(c.top)).links.length, 2);
  assert.deepEqual((await readdir(dir)).sort(), ['base.vmdk', 'top.vmdk']);

  const dir2 = (await tmpDir(t)).path;
  const c2 = await threeLinks(dir2, 7);
  await commit(c2.top, { base: c2.base, drop: true });
  assert.deepEqual(await readdir(dir2), ['base.vmdk']);
  assert.ok((await readAll(c2.base)).equals(c2.model));
});

test('commit refuses a base with another child unless forced', async (t) => {
  const dir = (await tmpDir(t)).path;
  const c = await threeLinks(dir);
  const sibling = await createChild(c.mid, join(dir, 'sibling.vmdk'));
  await sibling.close();
  await assert.rejects(commit(c.top), (e: DiskError) => e.code === 'RDONLY' && e.message.includes('sibling.vmdk'));
  await commit(c.top, { force: true });
  assert.ok((await readAll(c.top)).equals(c.model));
  await assert.rejects(Disk.open(join(dir, 'sibling.vmdk'), { readOnly: true }), (e: DiskError) => e.code === 'CID_MISMATCH');
});

test('merge into the top (the other direction): the top takes its parents\' data and keeps its CID', async (t) => {
  const dir = (await tmpDir(t)).path;
  const c = await threeLinks(dir);
  const before = (await describeChain(c.top)).links[0]!.cid;
  const r = await mergeIntoTop(c.top);
  assert.equal(r.parent, c.base);
  assert.ok((await readAll(c.top)).equals(c.model));
  const links = (await describeChain(c.top)).links;
  assert.equal(links.length, 2);
  assert.equal(links[0]!.cid, before);
  assert.deepEqual((await readdir(dir)).sort(), ['base.vmdk', 'top.vmdk']);
  await mergeIntoTop(c.top, { all: true });
  assert.equal((await describeChain(c.top)).links.length, 1);
  assert.ok((await readAll(c.top)).equals(c.model));
});

test('rebase: safe copies what differs; unsafe repairs a link after the parent moved and changed CID', async (t) => {
  const dir = (await tmpDir(t)).path;
  const c = await threeLinks(dir);
  // safe: put top directly on base; it must take mid's data
  const r = await rebase(c.top, c.base);
  assert.ok(r.bytesCopied > 0);
  assert.ok((await readAll(c.top)).equals(c.model));
  assert.equal((await describeChain(c.top)).links.length, 2);
  // safe rebase onto nothing: the top becomes standalone
  await rebase(c.top, undefined);
  assert.equal((await describeChain(c.top)).links.length, 1);
  assert.ok((await readAll(c.top)).equals(c.model));

  // repair: a child whose parent was copied elsewhere and got a new CID
  const dir2 = (await tmpDir(t)).path;
  const c2 = await threeLinks(dir2, 11);
  const moved = join(dir2, 'moved-mid.vmdk');
  const copy = await Disk.open(c2.mid, { readOnly: true });
  const { convert } = await import('../../src/ops/convert.js');
  await convert(copy, moved, { format: 'vmdk' });
  await copy.close();
  // the old parent is gone: the chain is broken, a safe rebase cannot read the old content
  for (const f of await readdir(dir2)) if (f.startsWith('mid')) await rm(join(dir2, f));
  await assert.rejects(Disk.open(c2.top, { readOnly: true }), (e: DiskError) => e.code === 'OPENPARENT');
  await assert.rejects(rebase(c2.top, moved), (e: DiskError) => e.code === 'OPENPARENT');
  await rebase(c2.top, moved, { unsafe: true });
  assert.ok((await readAll(c2.top)).equals(c2.model), 'reads the same through the moved copy');
  const hint = (await readFile(c2.top)).subarray(512, 512 * 21).toString('latin1');
  assert.match(hint, /parentFileNameHint="moved-mid\.vmdk"/);
});

/** Run the commit runner, SIGKILL it after its `k`-th step line (or let it finish). */
async function runCommitKilledAt(top: string, base: string, k: number): Promise<{ steps: string[]; killed: boolean }> {
  const r = await runKilledWhen(RUNNER, [top, base], (_l, n) => n === k);
  return { steps: r.lines, killed: r.killed };
}

test('a commit killed at random points 20 times: the chain always reads the same, and a second commit completes it', async (t) => {
  const rnd = mulberry32(20261121);
  // how many steps a whole commit takes (kill points are drawn below that)
  const probe = (await tmpDir(t)).path;
  const pc = await threeLinks(probe);
  const full = await runCommitKilledAt(pc.top, pc.base, Number.POSITIVE_INFINITY);
  assert.ok(!full.killed && full.steps.at(-1) === 'done');
  const total = full.steps.length - 1;
  assert.ok(total >= 8, `a commit has ${total} steps`);
  const seenSteps = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const dir = (await tmpDir(t)).path;
    const c = await threeLinks(dir, 100 + i);
    const k = 1 + Math.floor(rnd() * total);
    const run = await runCommitKilledAt(c.top, c.base, k);
    seenSteps.add((run.steps.at(-1) ?? '').replace(/^step /, '').split(' ')[0]!);
    assert.ok((await readAll(c.top)).equals(c.model), `iteration ${i}: killed after step ${k} (${run.steps.at(-1)}), the chain reads differently`);
    await commit(c.top, { base: c.base });
    assert.ok((await readAll(c.top)).equals(c.model), `iteration ${i}: after the second commit`);
    assert.equal((await describeChain(c.top)).links.length, 2);
    assert.deepEqual((await readdir(dir)).sort(), ['base.vmdk', 'top.vmdk'], `iteration ${i}: leftovers`);
  }
  t.diagnostic(`kill points covered: ${[...seenSteps].sort().join(', ')}`);
});

for (const format of ['vdi', 'vhd'] as const) {
  test(`${format}: commit keeps the base's UUID (VirtualBox and Hyper-V find disks by it) and the chain reads the same`, async (t) => {
    const dir = (await tmpDir(t)).path;
    const base = join(dir, `base.${format}`);
    const d = await Disk.create(base, { format, capacity: 8 * MiB });
    await d.write(0, xorshiftBytes(3 * MiB, 5));
    await d.close();
    const id = await Disk.open(base, { readOnly: true }).then(async (x) => { const v = x.image.identity(); await x.close(); return v; });
    const c = await createChild(base);
    await c.write(MiB + 3, xorshiftBytes(2 * MiB, 6));
    const model = await c.read(0, 8 * MiB);
    await c.close();
    await commit(c.path);
    const after = await Disk.open(base, { readOnly: true, singleLink: true });
    assert.equal(after.image.identity(), id);
    assert.ok((await after.read(0, 8 * MiB)).equals(model), 'the base holds the committed data');
    await after.close();
    assert.ok((await readAll(c.path)).equals(model));
    assert.equal((await describeChain(c.path)).links[0]!.allocatedBytes, 0);
  });
}
