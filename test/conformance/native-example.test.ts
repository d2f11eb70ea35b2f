/**
 * examples/native-api.ts run as a program: on a 2-link chain (a qcow2 child over a VMDK parent)
 * with a boot sector and data in both links, what it prints must match the facts the test wrote
 * (format, size, links, the 55 AA signature, the data ranges), its progress must climb to 100 %,
 * and the VDI it writes must hold the chain's bytes (read back here, and by qemu-img when present).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk, createChild } from '../../src/index.js';
import { describeRun, hasTool, repoRoot, run, tmpDir } from '../helpers/tools.js';

const EXAMPLE = join(repoRoot(), 'dist', 'examples', 'native-api.js');
const MiB = 2 ** 20;

test('examples/native-api: open a chain, read, map, convert with progress, prove the copy', async (t) => {
  const dir = await tmpDir(t);
  const parent = join(dir.path, 'base.vmdk');
  const child = join(dir.path, 'top.qcow2');
  const p = await Disk.create(parent, { format: 'vmdk', capacity: 32 * MiB });
  const boot = Buffer.alloc(512, 0x33);
  boot[510] = 0x55;
  boot[511] = 0xaa;
  await p.write(0, boot);
  await p.write(8 * MiB, Buffer.alloc(MiB, 0x44));
  await p.close();
  const c = await createChild(parent, child, { format: 'qcow2' });
  await c.write(20 * MiB, Buffer.alloc(2 * MiB, 0x55));
  await c.close();

  const out = join(dir.path, 'copy.vdi');
  const r = await run(process.execPath, [EXAMPLE, child, out]);
  assert.equal(r.code, 0, describeRun('native-api', [child, out], r));
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines[0], `${child}: qcow2 v3, ${32 * MiB} bytes, 2 link(s)`);
  assert.match(lines[1]!, /^first sector: 3{32}….*boot signature 55 AA/);
  // block status of the chain: the boot sector's block, 8 MiB and 20 MiB hold data
  const dataLine = lines.find((l) => l.startsWith('data: '))!;
  const m = /^data: (\d+) bytes in (\d+) range\(s\), first at 0$/.exec(dataLine);
  assert.ok(m, dataLine);
  assert.ok(Number(m[1]) >= 3 * MiB + 512 && Number(m[1]) <= 6 * MiB, dataLine);
  const progress = lines.filter((l) => l.startsWith('progress: ')).map((l) => Number(/(\d+)%/.exec(l)![1]));
  assert.ok(progress.length >= 2, `progress lines: ${progress}`);
  assert.deepEqual([...progress].sort((a, b) => a - b), progress, 'progress only climbs');
  assert.equal(progress.at(-1), 100);
  assert.match(lines.at(-1)!, /^identical: sha256-1m:[0-9a-f]{64}$/);

  // the copy, read back independently of the example
  const copy = await Disk.open(out, { readOnly: true });
  try {
    assert.equal(copy.format, 'vdi');
    assert.ok((await copy.read(0, 512)).equals(boot));
    assert.ok((await copy.read(8 * MiB, MiB)).equals(Buffer.alloc(MiB, 0x44)));
    assert.ok((await copy.read(20 * MiB, 2 * MiB)).equals(Buffer.alloc(2 * MiB, 0x55)));
    assert.ok((await copy.read(12 * MiB, MiB)).equals(Buffer.alloc(MiB)));
  } finally {
    await copy.close();
  }
  if (hasTool('qemu-img')) {
    const cmp = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'vdi', child, out]);
    assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
  }

  // a bad source: exit 1 and the DiskError's code on stderr
  const bad = await run(process.execPath, [EXAMPLE, join(dir.path, 'missing.vmdk'), out + '2']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^FILENOTFOUND: /);
});
