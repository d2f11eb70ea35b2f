/**
 * `vdkit convert --keep-chain [--from N --to M] [--size SIZE]` from the command line, and a
 * chain-keeping clone killed at random moments: nothing ever appears at the destination name
 * unless the whole chain is there, and the next clone to that name removes what was left.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, cloneChain, compare, createChild, describeChain } from '../../src/index.js';
import { tmpDir } from '../helpers/tools.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';

const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;
const MiB = 2 ** 20;

function vdkit(args: string[], cwd: string, killAfterMs?: number): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = killAfterMs === undefined ? undefined : setTimeout(() => p.kill('SIGKILL'), killAfterMs);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** base.vmdk <- base-000001.vmdk <- base-000002.vmdk, data in each link */
async function makeChain(dir: string, capacity: number, perLink: number): Promise<string> {
  let d = await Disk.create(join(dir, 'base.vmdk'), { capacity });
  for (let level = 0; level < 3; level++) {
    if (level > 0) {
      const parent = d.path;
      await d.close();
      d = await createChild(parent);
    }
    for (let i = 0; i < perLink; i++) await d.write(((i * 5 + level * 3) % (capacity / MiB - 1)) * MiB + level * 4096, xorshiftBytes(MiB, level * 100 + i + 1));
  }
  const top = d.path;
  await d.close();
  return top;
}

async function sameContent(a: string, b: string): Promise<boolean> {
  const da = await Disk.open(a, { readOnly: true });
  const db = await Disk.open(b, { readOnly: true });
  try {
    return (await compare(da, db)).identical;
  } finally {
    await da.close();
    await db.close();
  }
}

test('CLI: convert --keep-chain, --from/--to, --size, and their usage errors', async (t) => {
  const dir = (await tmpDir(t)).path;
  const top = await makeChain(dir, 24 * MiB, 3);
  const ok = async (args: string[]) => {
    const r = await vdkit(args, dir);
    assert.equal(r.code, 0, `vdkit ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  await ok(['convert', '--keep-chain', '-O', 'qcow2', top, 'all.qcow2']);
  const links = JSON.parse((await ok(['chain', '--json', 'all.qcow2'])).stdout) as { links: { path: string; format: string }[] };
  assert.deepEqual(links.links.map((l) => l.path.split('/').pop()), ['all.qcow2', 'all-base-000001.qcow2', 'all-base.qcow2']);
  assert.ok(await sameContent(join(dir, 'all.qcow2'), top), 'keep-chain clone reads as the source');

  await ok(['convert', '--keep-chain', '--from', '1', '--to', '1', '-O', 'vhdx', top, 'one.vhdx']);
  assert.equal((await describeChain(join(dir, 'one.vhdx'))).links.length, 1);
  assert.ok(await sameContent(join(dir, 'one.vhdx'), join(dir, 'base-000001.vmdk')), '--from 1 --to 1 is link 1 flattened');

  await ok(['convert', '--keep-chain', '--size', '32M', '-O', 'vdi', top, 'big.vdi']);
  const big = await describeChain(join(dir, 'big.vdi'));
  assert.deepEqual(big.links.map((l) => l.capacity), [32 * MiB, 32 * MiB, 32 * MiB], '--size applies to every link');

  await ok(['convert', '--size', '8M', '-O', 'vhd', top, 'small.vhd']);
  const small = JSON.parse((await ok(['info', '--json', 'small.vhd'])).stdout) as { capacity: number; numLinks: number };
  assert.deepEqual([small.capacity, small.numLinks], [8 * MiB, 1]);
  const head = await Disk.open(join(dir, 'small.vhd'), { readOnly: true });
  const src = await Disk.open(top, { readOnly: true });
  assert.ok((await head.read(0, 8 * MiB)).equals(await src.read(0, 8 * MiB)), 'the first 8 MiB are kept');
  await head.close();
  await src.close();

  for (const [args, code, what] of [
    [['convert', '--from', '1', top, 'x.vmdk'], 2, /--from needs --keep-chain/],
    [['convert', '--keep-chain', '--to', 'top', top, 'x.vmdk'], 2, /--to: expected a link number/],
    [['convert', '--size', 'big', top, 'x.vmdk'], 2, /--size: expected a number/],
    [['convert', '--keep-chain', '-O', 'raw', top, 'x.img'], 1, /NOTSUPPORTED.*raw/],
    [['convert', '--keep-chain', '--from', '3', top, 'x.vmdk'], 1, /INVAL.*from/],
  ] as const) {
    const r = await vdkit([...args], dir);
    assert.equal(r.code, code, `vdkit ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, what);
  }
  assert.equal((await readdir(dir)).some((n) => n.startsWith('x')), false, 'refused converts leave nothing');
});

test('a keep-chain clone killed at random moments never leaves anything at the destination name but the whole chain', async (t) => {
  const dir = (await tmpDir(t)).path;
  const top = await makeChain(dir, 48 * MiB, 6);
  const rnd = mulberry32(16);
  const formats = ['vmdk', 'qcow2', 'vhdx', 'vdi', 'vhd'];
  const runs = 10;
  // kill times as fractions of how long a whole clone takes here (machines and loads differ)
  const t0 = performance.now();
  const whole = await vdkit(['convert', '--keep-chain', '-O', 'qcow2', top, 'whole.qcow2'], dir);
  assert.equal(whole.code, 0, whole.stderr);
  const wholeMs = performance.now() - t0;
  let killed = 0;
  let finished = 0;
  for (let i = 0; i < runs; i++) {
    const format = formats[i % formats.length]!;
    const name = `${i}-out.${format}`;
    const r = await vdkit(['convert', '--keep-chain', '-O', format, top, name], dir, Math.round(wholeMs * (0.2 + 1.1 * rnd())));
    if (r.signal === 'SIGKILL') killed++;
    else {
      assert.equal(r.code, 0, `run ${i}: ${r.stderr}`);
      finished++;
    }
    if ((await readdir(dir)).includes(name)) {
      // whatever is at the destination name is the whole chain
      assert.equal((await describeChain(join(dir, name))).links.length, 3, `run ${i}: ${name} has every link`);
      assert.ok(await sameContent(join(dir, name), top), `run ${i}: ${name} exists but differs`);
    } else {
      assert.equal(r.signal, 'SIGKILL', `run ${i}: a finished clone left no top`);
    }
  }
  t.diagnostic(`a whole clone took ${Math.round(wholeMs)} ms; ${killed} clones killed, ${finished} finished`);
  assert.ok(killed >= 3, 'the kill times must actually interrupt some clones');
  // cloning again to each name whose clone was killed removes what that one left behind
  const src = await Disk.open(top, { readOnly: true });
  for (let i = 0; i < runs; i++) {
    const format = formats[i % formats.length]!;
    if ((await readdir(dir)).includes(`${i}-out.${format}`)) continue;
    await cloneChain(src, join(dir, `${i}-out.${format}`), { format });
  }
  await src.close();
  const names = await readdir(dir);
  // the one thing a kill may leave beside a whole chain: the record of a clone killed after its
  // last rename (its removal lost); the next clone or convert to that name removes it
  const leftovers = names.filter((n) => n.includes('.vdkit-partial-'));
  for (const n of leftovers) {
    const run = /^\.(\d+)-out\.vdkit-partial-\d+\.chain$/.exec(n)?.[1];
    assert.ok(run !== undefined && names.includes(`${run}-out.${formats[Number(run) % formats.length]}`), `${n}: a temporary file left after the clean-up`);
  }
  for (let i = 0; i < runs; i++) {
    const format = formats[i % formats.length]!;
    assert.deepEqual(names.filter((n) => n.startsWith(`${i}-`)).sort(), [`${i}-out-base-000001.${format}`, `${i}-out-base.${format}`, `${i}-out.${format}`], `run ${i}: exactly the three links`);
  }
});

test('a keep-chain clone killed at each step (write, each rename, before its record goes) is cleaned up by the next clone to that name', async (t) => {
  const dir = (await tmpDir(t)).path;
  const top = await makeChain(dir, 16 * MiB, 2);
  const index = new URL('../../src/index.js', import.meta.url).href;
  // the child clones and kills itself with SIGKILL right after the named step
  const script = `const { cloneChain } = await import(${JSON.stringify(index)});
    const [src, dst, format, stop] = process.argv.slice(1);
    await cloneChain(src, dst, { format, onStep: (s) => { if (s.endsWith(stop)) process.kill(process.pid, 'SIGKILL'); } });`;
  const steps = ['link 1 written', 'k-base.qcow2', 'k-base-000001.qcow2', 'k.qcow2'];
  for (const [i, stop] of steps.entries()) {
    const dst = join(dir, 'k.qcow2');
    const r = await new Promise<{ signal: string | null }>((resolve, reject) => {
      const p = spawn(process.execPath, ['--input-type=module', '-e', script, top, dst, 'qcow2', stop], { stdio: 'ignore' });
      p.on('error', reject);
      p.on('close', (_code, signal) => resolve({ signal }));
    });
    assert.equal(r.signal, 'SIGKILL', `killed after "${stop}"`);
    const ours = async () => (await readdir(dir)).filter((n) => n.startsWith('k') || n.startsWith('.k')).sort();
    if (i < 3) assert.ok(!(await ours()).includes('k.qcow2'), `after "${stop}": nothing at the destination name`);
    else {
      // killed after its last rename: the chain is whole, only the record is left
      assert.ok(await sameContent(dst, top), 'killed after its last rename: the chain is whole');
      assert.equal((await ours()).filter((n) => n.endsWith('.chain')).length, 1, 'its record is left');
    }
    // the next clone to that name: without overwrite the leftovers must not be in the way
    await cloneChain(top, dst, { format: 'qcow2', overwrite: i === 3 });
    assert.deepEqual(await ours(), ['k-base-000001.qcow2', 'k-base.qcow2', 'k.qcow2'], `after "${stop}" and a new clone`);
    assert.ok(await sameContent(dst, top), `after "${stop}": the new clone`);
    for (const n of await readdir(dir)) if (n.startsWith('k')) await rm(join(dir, n));
  }
});
