import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, compare, convert } from '../../src/index.js';
import { tmpDir } from '../helpers/tools.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';

const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;
const MiB = 2 ** 20;

function convertKilledAfter(args: string[], ms: number): Promise<'killed' | 'finished'> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [BIN, 'convert', ...args], { stdio: 'ignore' });
    const timer = setTimeout(() => p.kill('SIGKILL'), ms);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL') resolve('killed');
      else if (code === 0) resolve('finished');
      else reject(new Error(`convert exited with ${code}`));
    });
  });
}

test('a convert killed at random moments never leaves a target at the destination name', async (t) => {
  const dir = (await tmpDir(t)).path;
  const src = join(dir, 'src.vmdk');
  const d = await Disk.create(src, { capacity: 96 * MiB });
  for (let i = 0; i < 12; i++) await d.write(i * 8 * MiB, xorshiftBytes(4 * MiB, i + 1));
  await d.close();
  const rnd = mulberry32(6);
  const targets: [string, string[]][] = [
    ['out.vmdk', ['-O', 'vmdk']],
    ['split.vmdk', ['-O', 'vmdk', '-t', 'twoGbMaxExtentFlat']],
    ['out.qcow2', ['-O', 'qcow2']],
    ['out.vhdx', ['-O', 'vhdx']],
    ['out.vdi', ['-O', 'vdi']],
    ['stream.vmdk', ['-O', 'vmdk', '-t', 'streamOptimized']],
  ];
  let killed = 0;
  let finished = 0;
  for (let i = 0; i < 20; i++) {
    const [name, args] = targets[i % targets.length]!;
    const dst = join(dir, `${i}-${name}`);
    const outcome = await convertKilledAfter([...args, src, dst], 60 + Math.floor(rnd() * 900));
    if (outcome === 'killed') killed++;
    else finished++;
    const names = await readdir(dir);
    if (names.includes(`${i}-${name}`)) {
      // whatever is at the destination name is the whole disk
      const a = await Disk.open(src, { readOnly: true });
      const b = await Disk.open(dst, { readOnly: true });
      assert.ok((await compare(a, b)).identical, `run ${i} (${outcome}): ${dst} exists but differs`);
      await a.close();
      await b.close();
    } else {
      assert.equal(outcome, 'killed', `run ${i}: a finished convert left no target`);
    }
  }
  t.diagnostic(`${killed} converts killed, ${finished} finished`);
  assert.ok(killed >= 5, 'the kill times must actually interrupt some converts');
  // converting again to a name whose convert was killed removes what that one left behind
  const s = await Disk.open(src, { readOnly: true });
  for (let i = 0; i < 20; i++) {
    const [name, args] = targets[i % targets.length]!;
    const dst = join(dir, `${i}-${name}`);
    if ((await readdir(dir)).includes(`${i}-${name}`)) continue;
    const type = args.includes('-t') ? args[args.indexOf('-t') + 1] : undefined;
    await convert(s, dst, { format: args[1]!, type });
  }
  await s.close();
  assert.deepEqual((await readdir(dir)).filter((n) => n.includes('.vdkit-partial-')), [], 'no partial files left');
});
