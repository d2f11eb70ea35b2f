/**
 * `vdkit info --output=json` and `vdkit map --output=json` against qemu-img's on the same images
 * (issue 16): every format qemu-img and vdkit both read (qcow2, VMDK sparse, VDI, VHD = qemu's
 * vpc, VHDX, raw), each with data, a zeroed range and holes, and a 3-link chain (qcow2 over a
 * VMDK child over a VMDK base) named relative to the working folder, as a user types it.
 *
 * info: every key both tools print is compared, at every level (top-level keys, format-specific
 * type and data, VMDK extents); the keys only one prints are listed with t.diagnostic, not
 * compared. Left out on purpose:
 * - format-specific.data.extents[].format: qemu-img prints "" for the extent that lies in the
 *   descriptor's own file (a monolithicSparse VMDK: it opens that extent from its header and
 *   never sets a type), and the descriptor's type (SPARSE, FLAT) for every other; vdkit prints
 *   the descriptor's type for all.
 * actual-size is compared: both tools take it from st_blocks of the same files, opened
 * read-only, so it cannot change between the two runs.
 *
 * map: the output text must be byte for byte qemu-img's.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';

const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;

/** keys not compared, as dotted paths with [] for array items (see the header for why) */
const NOT_COMPARED = new Set(['format-specific.data.extents[].format']);

async function ok(cmd: string, args: string[], cwd: string): Promise<string> {
  const r = await run(cmd, args, { cwd });
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r.stdout;
}

/** qemu-io writes: data at 0 and 2 MiB, a zeroed 64 KiB at 1 MiB, holes elsewhere */
async function makeImage(dir: string, fmt: string, name: string): Promise<void> {
  await ok('qemu-img', ['create', '-q', '-f', fmt, name, '4M'], dir);
  await ok('qemu-io', ['-f', fmt, '-c', 'write -P 0xab 0 64k', '-c', 'write -z 1M 64k', '-c', 'write -P 1 2M 4k', name], dir);
}

/** compare every key both print; returns the paths only one of them has */
function compareShared(q: unknown, v: unknown, path: string, onlyOne: string[]): void {
  if (NOT_COMPARED.has(path.replace(/^\[\]\.?/, ''))) return; // a --backing-chain array: the same keys per link
  if (Array.isArray(q) && Array.isArray(v)) {
    assert.equal(v.length, q.length, `${path}: ${v.length} items, qemu-img ${q.length}`);
    q.forEach((item, i) => compareShared(item, v[i], `${path}[]`, onlyOne));
    return;
  }
  if (q !== null && typeof q === 'object' && v !== null && typeof v === 'object') {
    const qo = q as Record<string, unknown>;
    const vo = v as Record<string, unknown>;
    for (const k of new Set([...Object.keys(qo), ...Object.keys(vo)])) {
      const p = path === '' ? k : `${path}.${k}`;
      if (!(k in qo)) onlyOne.push(`vdkit only: ${p}`);
      else if (!(k in vo)) onlyOne.push(`qemu-img only: ${p}`);
      else compareShared(qo[k], vo[k], p, onlyOne);
    }
    return;
  }
  assert.deepEqual(v, q, `${path || '(top)'}: vdkit ${JSON.stringify(v)}, qemu-img ${JSON.stringify(q)}`);
}

async function compareInfo(t: TestContext, dir: string, args: string[], label: string): Promise<void> {
  const q = JSON.parse(await ok('qemu-img', ['info', '--output=json', ...args], dir)) as unknown;
  const v = JSON.parse(await ok('node', [BIN, 'info', '--output=json', ...args], dir)) as unknown;
  const onlyOne: string[] = [];
  compareShared(q, v, '', onlyOne);
  t.diagnostic(`${label}: keys compared: every key both print; not compared: ${[...NOT_COMPARED].join(', ')}; printed by one only: ${onlyOne.join(', ') || 'none'}`);
}

async function compareMap(dir: string, args: string[]): Promise<void> {
  const q = await ok('qemu-img', ['map', '--output=json', ...args], dir);
  const v = await ok('node', [BIN, 'map', '--output=json', ...args], dir);
  assert.equal(v, q, `vdkit map --output=json ${args.join(' ')} differs from qemu-img's`);
}

const FORMATS = ['qcow2', 'vmdk', 'vdi', 'vpc', 'vhdx', 'raw'];

test('info and map --output=json agree with qemu-img on every format', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  for (const fmt of FORMATS) {
    const name = `img.${fmt}`;
    await makeImage(dir, fmt, name);
    await compareInfo(t, dir, [name], fmt);
    await compareMap(dir, ['-f', fmt, name]);
  }
});

test('info --backing-chain and map --output=json agree with qemu-img on a 3-link chain', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  await ok('qemu-img', ['create', '-q', '-f', 'vmdk', 'base.vmdk', '4M'], dir);
  await ok('qemu-io', ['-f', 'vmdk', '-c', 'write -P 1 0 128k', '-c', 'write -P 2 1M 64k', 'base.vmdk'], dir);
  await ok('qemu-img', ['create', '-q', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', 'mid.vmdk'], dir);
  await ok('qemu-io', ['-f', 'vmdk', '-c', 'write -P 3 64k 64k', '-c', 'write -P 4 2M 64k', 'mid.vmdk'], dir);
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'mid.vmdk', '-F', 'vmdk', 'top.qcow2'], dir);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 5 2M 4k', '-c', 'write -z 1M 64k', 'top.qcow2'], dir);

  await compareInfo(t, dir, ['--backing-chain', 'top.qcow2'], 'chain');
  await compareInfo(t, dir, ['top.qcow2'], 'chain top');
  await compareInfo(t, dir, [`${dir}/top.qcow2`], 'chain top, absolute name');
  await compareMap(dir, ['top.qcow2']);

  // what the comparison rests on, said outright: one object per link, depth counted from the
  // top, a range no link stores is absent at the bottom link's depth
  const links = JSON.parse(await ok('node', [BIN, 'info', '--output=json', '--backing-chain', 'top.qcow2'], dir)) as { filename: string }[];
  assert.deepEqual(links.map((l) => l.filename), ['top.qcow2', 'mid.vmdk', 'base.vmdk']);
  const map = JSON.parse(await ok('node', [BIN, 'map', '--output=json', 'top.qcow2'], dir)) as { start: number; depth: number; present: boolean; offset?: number }[];
  assert.deepEqual(
    map.map((e) => [e.start, e.depth, e.present]),
    [
      [0, 2, true],
      [65536, 1, true],
      [131072, 2, false],
      [1048576, 0, true],
      [1114112, 2, false],
      [2097152, 0, true],
      [2162688, 2, false],
    ],
  );
});

test('--output takes human or json only (a usage error, exit 2)', async (t) => {
  const dir = (await tmpDir(t)).path;
  for (const cmd of ['info', 'map']) {
    const r = await run('node', [BIN, cmd, '--output=xml', 'none.qcow2'], { cwd: dir });
    assert.equal(r.code, 2, describeRun('vdkit', [cmd, '--output=xml'], r));
    assert.match(r.stderr, /--output: expected human or json/);
  }
});
