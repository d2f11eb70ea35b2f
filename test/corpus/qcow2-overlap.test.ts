/**
 * qcow2 images whose metadata overlaps itself (fuzzer findings, issue 14): a read-write open was
 * allowed and the next allocation, or an in-place write, landed on a cluster another entry still
 * names, so an acknowledged write read back as other bytes. Images made by qemu-img + qemu-io,
 * then bytes poked. Each case: the read-write open is refused with NEEDSREPAIR (read-only still
 * reads), or `check --repair` mends it so that writes by vdkit and by qemu-io afterwards leave
 * `qemu-img check` clean and the disk equal to a model.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Disk, DiskError } from '../../src/index.js';
import { checkDisk, openFindings } from '../../src/ops/check.js';
import { poke, readAt } from './support.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const CS = 64 * KiB;
const SIZE = 8 * MiB;
const OFFSET_MASK = 0x00fffffffffffe00n;

const u64 = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
};

async function qemu(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** qemu-img image with data at 0, 1 MiB and 2 MiB (0xaa, 0xbb, 0xcc) */
async function make(dir: string, name: string): Promise<string> {
  const p = join(dir, name);
  await qemu('qemu-img', ['create', '-q', '-f', 'qcow2', p, String(SIZE)]);
  await qemu('qemu-io', ['-c', 'write -P 0xaa 0 64k', '-c', 'write -P 0xbb 1M 64k', '-c', 'write -P 0xcc 2M 64k', p]);
  return p;
}

async function layout(p: string) {
  const h = await readAt(p, 0, 112);
  const l1 = Number(h.readBigUInt64BE(40));
  const rt = Number(h.readBigUInt64BE(48));
  const rb = Number((await readAt(p, rt, 8)).readBigUInt64BE(0));
  const l2 = Number((await readAt(p, l1, 8)).readBigUInt64BE(0) & OFFSET_MASK);
  const entry = async (i: number) => (await readAt(p, l2 + i * 8, 8)).readBigUInt64BE(0);
  return { l1, rt, rb, l2, entry };
}

async function readAll(p: string): Promise<Buffer> {
  const d = await Disk.open(p, { readOnly: true });
  try {
    return await d.read(0, SIZE);
  } finally {
    await d.close();
  }
}

async function refusedReadWrite(p: string): Promise<DiskError> {
  const before = statSync(p).mtimeMs;
  let err: unknown;
  try {
    await (await Disk.open(p)).close();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof DiskError, `read-write open refused (${String(err)})`);
  assert.equal(err.code, 'NEEDSREPAIR', err.message);
  assert.equal(err.details.path, p);
  assert.equal(statSync(p).mtimeMs, before, 'a refused open writes nothing');
  return err;
}

async function qemuCheck(p: string): Promise<{ code: number; text: string }> {
  const r = await run('qemu-img', ['check', p]);
  return { code: r.code, text: r.stdout + r.stderr };
}

/**
 * Repair with vdkit, then write through both paths (vdkit, qemu-io) at the damaged places and
 * elsewhere: qemu-img check stays clean and the disk equals the model (what it read before).
 */
async function repairThenWrite(p: string, model: Buffer, at: number[]): Promise<void> {
  const rep = await checkDisk(p, { repair: true });
  assert.deepEqual(openFindings(rep), { corruptions: 0, leaks: 0 }, JSON.stringify(rep.findings));
  let q = await qemuCheck(p);
  assert.equal(q.code, 0, `after vdkit check --repair: ${q.text}`);
  assert.ok((await readAll(p)).equals(model), 'the repair keeps what every entry read');
  const d = await Disk.open(p);
  for (const [k, off] of at.entries()) {
    const b = Buffer.alloc(4 * KiB, 0x10 + k);
    await d.write(off, b);
    b.copy(model, off);
  }
  await d.close();
  q = await qemuCheck(p);
  assert.equal(q.code, 0, `after vdkit writes: ${q.text}`);
  for (const [k, off] of at.entries()) {
    await qemu('qemu-io', ['-c', `write -P ${0x40 + k} ${off + 8 * KiB} 4k`, p]);
    model.fill(0x40 + k, off + 8 * KiB, off + 12 * KiB);
  }
  q = await qemuCheck(p);
  assert.equal(q.code, 0, `after qemu-io writes: ${q.text}`);
  assert.ok((await readAll(p)).equals(model), 'vdkit reads the model');
  const raw = join(p + '.model.raw');
  writeFileSync(raw, model);
  await qemu('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', raw, p]);
}

test('two L2 entries naming one cluster of refcount 1: read-write open refused; repair gives each its own cluster', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const p = await make(dir, 'dup.qcow2');
  const { l2, entry } = await layout(p);
  await poke(p, l2 + 16 * 8, u64(await entry(0))); // 1 MiB now names the cluster of 0
  const model = await readAll(p);
  assert.equal(model[MiB], 0xaa, 'read-only still reads (both entries: the 0xaa cluster)');
  const err = await refusedReadWrite(p);
  assert.match(err.message, /refcount=1 reference=2/);
  // old code: the open succeeded and a write at 1 MiB changed what 0 reads
  await repairThenWrite(p, model, [0, MiB, 3 * MiB]);
});

test('an L2 entry naming the L1 table with its refcount raised to match: an overlap check reports and repair copies', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const p = await make(dir, 'over.qcow2');
  const { l1, l2, rb } = await layout(p);
  await poke(p, l2 + 16 * 8, u64(0x8000000000000000n | BigInt(l1)));
  await poke(p, rb + (l1 / CS) * 2, Buffer.from([0, 2])); // counts agree: only the overlap is wrong
  const model = await readAll(p);
  const plain = await checkDisk(p, { repair: false });
  assert.ok(plain.findings.some((f) => f.kind === 'corruption' && /overlap/.test(f.message)), JSON.stringify(plain.findings));
  await refusedReadWrite(p);
  await repairThenWrite(p, model, [MiB, 4 * MiB]);
});

test('one L2 table named by two L1 entries (copied-table damage): after check -r the next writes keep COPIED right', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'shared-l2.qcow2');
  // 1 GiB: two L1 entries (512 MiB each)
  await qemu('qemu-img', ['create', '-q', '-f', 'qcow2', p, '1G']);
  await qemu('qemu-io', ['-c', 'write -P 0xaa 0 64k', '-c', 'write -P 0xbb 1M 64k', '-c', 'write -P 0xdd 512M 64k', p]);
  const { l1 } = await layout(p);
  const first = (await readAt(p, l1, 8)).readBigUInt64BE(0);
  await poke(p, l1 + 8, u64(first)); // L1[1] names L1[0]'s table, COPIED set, refcount 1
  const view = async () => {
    const d = await Disk.open(p, { readOnly: true });
    try {
      return Buffer.concat([await d.read(0, 2 * MiB), await d.read(512 * MiB, 2 * MiB)]);
    } finally {
      await d.close();
    }
  };
  const model = await view();
  assert.equal(model[2 * MiB], 0xaa, 'L1[1] reads L1[0]\'s data');
  await refusedReadWrite(p);
  const rep = await checkDisk(p, { repair: true });
  assert.deepEqual(openFindings(rep), { corruptions: 0, leaks: 0 }, JSON.stringify(rep.findings));
  assert.equal((await qemuCheck(p)).code, 0);
  assert.ok((await view()).equals(model));
  const d = await Disk.open(p);
  await d.write(0, Buffer.alloc(4 * KiB, 1));
  await d.write(512 * MiB + MiB, Buffer.alloc(4 * KiB, 2));
  await d.close();
  model.fill(1, 0, 4 * KiB);
  model.fill(2, 3 * MiB, 3 * MiB + 4 * KiB);
  let q = await qemuCheck(p);
  assert.equal(q.code, 0, `after vdkit writes: ${q.text}`);
  await qemu('qemu-io', ['-c', 'write -P 0x33 8k 4k', '-c', 'write -P 0x44 512M 4k', p]);
  model.fill(0x33, 8 * KiB, 12 * KiB);
  model.fill(0x44, 2 * MiB, 2 * MiB + 4 * KiB);
  q = await qemuCheck(p);
  assert.equal(q.code, 0, `after qemu-io writes: ${q.text}`);
  assert.ok((await view()).equals(model), 'both ranges read the model');
});

test('COPIED set on a data cluster of refcount 2: read-write open refused (an in-place write would change both)', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const p = await make(dir, 'copied.qcow2');
  const { l2, rb, entry } = await layout(p);
  const e0 = await entry(0);
  await poke(p, l2 + 16 * 8, u64(e0)); // shared, both COPIED
  await poke(p, rb + Number((e0 & OFFSET_MASK) / BigInt(CS)) * 2, Buffer.from([0, 2])); // refcount right, flags wrong
  const model = await readAll(p);
  const err = await refusedReadWrite(p);
  assert.match(err.message, /OFLAG_COPIED/);
  await repairThenWrite(p, model, [0, MiB]);
});

test('truncated files: an L2 table or data cut off -> read-write open refused, read-only opens', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const src = await make(dir, 'src.qcow2');
  const { l2 } = await layout(src);
  const end = statSync(src).size;
  const cases: [string, number][] = [
    ['inside a data cluster (the last one past the end)', end - CS - 512],
    ['at the L2 table (the table past the end)', l2],
    ['inside the L2 table (its data past the end)', l2 + 512],
  ];
  for (const [what, at] of cases) {
    const p = join(dir, `cut-${at}.qcow2`);
    writeFileSync(p, await readAt(src, 0, end));
    truncateSync(p, at);
    assert.equal((await qemuCheck(p)).code, 2, `${what}: qemu-img check finds corruption`);
    await refusedReadWrite(p);
    await (await Disk.open(p, { readOnly: true })).close();
  }
});

test('findings stay bounded: 200,000 L1 entries past the end of the file are one finding with a count', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'wide.qcow2');
  const entries = 200_000;
  await qemu('qemu-img', ['create', '-q', '-f', 'qcow2', p, String(entries * 512 * MiB)]);
  const h = await readAt(p, 0, 112);
  assert.equal(h.readUInt32BE(36), entries);
  const l1 = Number(h.readBigUInt64BE(40));
  const table = Buffer.alloc(entries * 8);
  for (let i = 0; i < entries; i++) table.writeBigUInt64BE(0x8000000000000000n | (BigInt(i + 1) << 32n), i * 8);
  await poke(p, l1, table);
  const r = await checkDisk(p, { repair: false });
  const past = r.findings.filter((f) => /past the end/.test(f.message));
  assert.equal(past.reduce((n, f) => n + (f.count ?? 1), 0), entries, JSON.stringify(r.findings.slice(0, 3)));
  assert.ok(r.findings.length < 10, `${r.findings.length} findings`);
  await refusedReadWrite(p);
});
