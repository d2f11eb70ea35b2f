import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const BIN = join(REPO, 'bin', 'vdkit.js');

function vdkit(args: string[], opts: { cwd: string; input?: Buffer }): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd });
    const out: Buffer[] = [];
    let err = '';
    p.stdout.on('data', (c: Buffer) => out.push(c));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('error', rej);
    p.on('close', (code) => res({ code: code ?? -1, stdout: Buffer.concat(out), stderr: err }));
    p.stdin.end(opts.input ?? Buffer.alloc(0));
  });
}

test('CLI: create (names and numbers), info --json, write/read, fill, meta, map, convert, exit codes', async () => {
  const cwd = await mkdtemp(join(tmpdir(), 'vdkit-cli-'));
  try {
    const ok = async (args: string[], input?: Buffer) => {
      const r = await vdkit(args, { cwd, input });
      assert.equal(r.code, 0, `vdkit ${args.join(' ')}: ${r.stderr}`);
      return r;
    };
    await ok(['create', 'a.vmdk', '64M']);
    await ok(['create', '-t', '1', '-a', 'ide', '--hw', '7', 'b.vmdk', '2100M']);
    await ok(['create', '-t', '2', 'c.vmdk', '8388608s']);
    await ok(['create', '-t', 'vmfs', '--thin', 'd.vmdk', '1G']);

    const info = JSON.parse((await ok(['info', '--json', 'b.vmdk'])).stdout.toString());
    for (const k of ['format', 'type', 'capacity', 'sectors', 'numLinks', 'parent', 'cid', 'parentCid', 'extents', 'adapterType', 'geometry']) {
      assert.ok(k in info, `info --json has ${k}`);
    }
    assert.equal(info.format, 'vmdk');
    assert.equal(info.type, 'twoGbMaxExtentSparse');
    assert.equal(info.capacity, 2100 * 1024 * 1024);
    assert.equal(info.sectors, 2100 * 2048);
    assert.equal(info.numLinks, 1);
    assert.equal(info.parent, null);
    assert.equal(info.adapterType, 'ide');
    assert.equal(info.hwVersion, '7');
    assert.equal(info.extents.length, 2);
    assert.deepEqual(info.geometry, { cylinders: 4266, heads: 16, sectors: 63 });
    assert.equal(JSON.parse((await ok(['info', '--json', 'c.vmdk'])).stdout.toString()).capacity, 4 * 2 ** 30);

    const payload = Buffer.from('vdkit writes this through stdin\n');
    await ok(['write', 'a.vmdk', '--offset', '1M'], payload);
    const back = await ok(['read', 'a.vmdk', '--offset', '1M', '--length', String(payload.length)]);
    assert.deepEqual(back.stdout, payload);
    const hex = (await ok(['read', 'a.vmdk', '--offset', '1048576', '--length', '16', '--hex'])).stdout.toString();
    assert.match(hex, /^00100000: 76 64 6b 69 74 20 77 72 69 74 65 73 20 74 68 69 {2}\|vdkit writes thi\|$/m);

    await ok(['fill', 'a.vmdk', '--start', '4', '--count', '3', '--value', '0x41']);
    const filled = (await ok(['read', 'a.vmdk', '--offset', '2048', '--length', '1536'])).stdout;
    assert.deepEqual(filled, Buffer.alloc(1536, 0x41));

    await ok(['meta', 'a.vmdk', 'toolsVersion', '4242']);
    assert.equal((await ok(['meta', 'a.vmdk', 'toolsVersion'])).stdout.toString(), '4242\n');
    assert.match((await ok(['meta', 'a.vmdk'])).stdout.toString(), /^adapterType = lsilogic$/m);

    const map = JSON.parse((await ok(['map', '--json', 'a.vmdk'])).stdout.toString()) as { offset: number; length: number; state: string }[];
    assert.deepEqual(map.filter((r) => r.state === 'data').map((r) => [r.offset, r.length]), [[0, 65536], [1 << 20, 65536]]);

    await ok(['convert', '-O', 'raw', 'a.vmdk', 'a.raw']);
    const raw = await readFile(join(cwd, 'a.raw'));
    assert.equal(raw.length, 64 << 20);
    assert.deepEqual(raw.subarray(1 << 20, (1 << 20) + payload.length), payload);
    await ok(['convert', '-f', 'raw', '-O', 'vmdk', '-t', 'twoGbMaxExtentFlat', 'a.raw', 'e.vmdk']);
    const again = await ok(['read', 'e.vmdk', '--offset', '0', '--length', String(64 << 20)]);
    assert.ok(again.stdout.equals(raw), 'raw -> vmdk -> bytes round trip');

    // failures: 1 with code and text; usage: 2
    const oor = await vdkit(['read', 'a.vmdk', '--offset', '64M', '--length', '1'], { cwd });
    assert.equal(oor.code, 1);
    assert.match(oor.stderr, /OUTOFRANGE \(16007\)/);
    const missing = await vdkit(['info', 'nope.vmdk'], { cwd });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /FILENOTFOUND.*nope\.vmdk/);
    const exists = await vdkit(['create', 'a.vmdk', '1M'], { cwd });
    assert.equal(exists.code, 1);
    assert.match(exists.stderr, /FILEEXISTS/);
    await writeFile(join(cwd, 'junk.vmdk'), 'not a disk at all');
    const junk = await vdkit(['info', '-f', 'vmdk', 'junk.vmdk'], { cwd });
    assert.equal(junk.code, 1);
    assert.match(junk.stderr, /INVALIDDISK/);
    assert.equal((await vdkit(['frobnicate'], { cwd })).code, 2);
    assert.equal((await vdkit(['create', 'x.vmdk'], { cwd })).code, 2);
    assert.equal((await vdkit(['create', 'x.vmdk', 'ten'], { cwd })).code, 2);
    assert.equal((await vdkit(['read', 'a.vmdk', '--offset', '0'], { cwd })).code, 2);
    assert.equal((await vdkit(['--help'], { cwd })).code, 0);
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
});

test('CLI: convert -p draws a progress bar on a terminal, and plain lines on a pipe', async (t) => {
  const script = spawnSync('sh', ['-c', 'command -v script'], { encoding: 'utf8' });
  if (script.status !== 0) {
    t.skip('the `script` command (util-linux) is not installed: no pseudo-terminal to test with');
    return;
  }
  const cwd = await mkdtemp(join(tmpdir(), 'vdkit-cli-p-'));
  try {
    assert.equal((await vdkit(['create', 's.vmdk', '256M'], { cwd })).code, 0);
    assert.equal((await vdkit(['fill', 's.vmdk', '--start', '0', '--count', '40000'], { cwd })).code, 0);
    const cmd = `${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} convert -p -O vmdk s.vmdk t.vmdk`;
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { cwd, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /\r\[#{30}\] 100\.0%/);
    const piped = await vdkit(['convert', '-p', '-O', 'raw', 's.vmdk', 't.raw'], { cwd });
    assert.equal(piped.code, 0);
    // as qemu-img convert -p: one plain line per step, not a bar of carriage returns (cli-progress.test.ts)
    assert.match(piped.stderr, /^( {4}\(\d+\.\d\d\/100%\)\n)+$/);
    assert.match(piped.stderr, /\(100\.00\/100%\)\n$/);
    // --json-progress: one JSON object per line, ending at 100 %
    const json = await vdkit(['convert', '--json-progress', '-O', 'qcow2', 's.vmdk', 't.qcow2'], { cwd });
    assert.equal(json.code, 0);
    const lines = json.stderr.trim().split('\n').map((l) => JSON.parse(l) as { done: number; total: number; percent: number });
    assert.ok(lines.length >= 2);
    assert.equal(lines.at(-1)!.percent, 100);
    assert.equal(lines.at(-1)!.total, 256 * 2 ** 20);
    for (let i = 1; i < lines.length; i++) assert.ok(lines[i]!.done >= lines[i - 1]!.done);
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
});

test('CLI: child/redo, attach, chain, commit, rebase', async () => {
  const cwd = await mkdtemp(join(tmpdir(), 'vdkit-cli-chain-'));
  try {
    const ok = async (args: string[]) => {
      const r = await vdkit(args, { cwd });
      assert.equal(r.code, 0, `vdkit ${args.join(' ')}: ${r.stderr}`);
      return r.stdout.toString();
    };
    await ok(['create', 'base.vmdk', '32M']);
    await ok(['fill', 'base.vmdk', '--start', '0', '--count', '4', '--value', '0x11']);
    assert.match(await ok(['child', 'base.vmdk']), /created .*base-000001\.vmdk: child of base\.vmdk \(2 links/);
    await ok(['fill', 'base-000001.vmdk', '--start', '2', '--count', '1', '--value', '0x22']);
    assert.match(await ok(['redo', 'base-000001.vmdk']), /base-000002\.vmdk/);
    await ok(['fill', 'base-000002.vmdk', '--start', '3', '--count', '1', '--value', '0x33']);
    const expect = Buffer.concat([Buffer.alloc(1024, 0x11), Buffer.alloc(512, 0x22), Buffer.alloc(512, 0x33)]);
    assert.deepEqual(Buffer.from(await vdkit(['read', 'base-000002.vmdk', '--offset', '0', '--length', '2048'], { cwd }).then((r) => r.stdout)), expect);

    const info = JSON.parse(await ok(['info', '--json', 'base-000002.vmdk']));
    assert.equal(info.numLinks, 3);
    assert.equal(info.parent, 'base-000001.vmdk');
    assert.equal(info.chain.length, 3);
    const chain = JSON.parse(await ok(['chain', '--json', 'base-000002.vmdk']));
    assert.equal(chain.links.length, 3);
    assert.equal(chain.break, null);
    assert.equal(chain.links[0].parentCid, chain.links[1].cid);
    assert.match(await ok(['chain', 'base-000002.vmdk']), /^ {2}3 {2}.*base\.vmdk\n.*; base$/m);

    // the parent is read-only now; --force overrides
    const refused = await vdkit(['fill', 'base.vmdk', '--start', '9', '--count', '1'], { cwd });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /RDONLY.*base-000001\.vmdk is a child/);

    assert.match(await ok(['attach', 'base.vmdk', 'other.vmdk']), /attached .*other\.vmdk to base\.vmdk \(2 links\)/);

    assert.match(await ok(['commit', 'base-000002.vmdk']), /committed 64 KiB into .*base-000001\.vmdk/);
    assert.deepEqual(Buffer.from(await vdkit(['read', 'base-000002.vmdk', '--offset', '0', '--length', '2048'], { cwd }).then((r) => r.stdout)), expect);
    assert.match(await ok(['rebase', '-b', 'base.vmdk', 'base-000002.vmdk']), /now has parent base\.vmdk \(\d+ (B|KiB) copied\)/);
    assert.equal(JSON.parse(await ok(['info', '--json', 'base-000002.vmdk'])).numLinks, 2);
    assert.deepEqual(Buffer.from(await vdkit(['read', 'base-000002.vmdk', '--offset', '0', '--length', '2048'], { cwd }).then((r) => r.stdout)), expect);
    assert.match(await ok(['commit', '--into-top', '--all', 'base-000002.vmdk']), /standalone/);
    assert.equal(JSON.parse(await ok(['info', '--json', 'base-000002.vmdk'])).numLinks, 1);

    // a broken chain: listed up to the break, exit 1 with the code
    await rename(join(cwd, 'base.vmdk'), join(cwd, 'gone.vmdk'));
    const broken = await vdkit(['chain', 'other.vmdk'], { cwd });
    assert.equal(broken.code, 1);
    assert.match(broken.stdout.toString(), /BROKEN below .*other\.vmdk: OPENPARENT/);
    assert.match(broken.stderr, /OPENPARENT/);
    await ok(['rebase', '-u', '-b', 'gone.vmdk', 'other.vmdk']);
    assert.equal(JSON.parse(await ok(['info', '--json', 'other.vmdk'])).numLinks, 2);
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
});

test('CLI: VDI and VHD — create, formats, info, meta, child/chain, convert between formats', async () => {
  const cwd = await mkdtemp(join(tmpdir(), 'vdkit-cli-fmt-'));
  try {
    const ok = async (args: string[], input?: Buffer) => {
      const r = await vdkit(args, { cwd, input });
      assert.equal(r.code, 0, `vdkit ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    const formats = JSON.parse((await ok(['formats', '--json'])).toString()) as { name: string; capabilities: { createTypes: string[]; differencing: boolean } }[];
    assert.deepEqual(formats.map((f) => f.name).sort(), ['qcow2', 'raw', 'vdi', 'vhd', 'vhdx', 'vmdk']);
    assert.deepEqual(formats.find((f) => f.name === 'vdi')!.capabilities.createTypes, ['dynamic', 'fixed']);
    assert.equal(formats.find((f) => f.name === 'vhd')!.capabilities.differencing, true);

    await ok(['create', '-f', 'vdi', 'd.vdi', '64M']);
    await ok(['create', '-f', 'vdi', '-t', 'fixed', 'f.vdi', '8M']);
    await ok(['create', '-f', 'vhd', '-t', 'fixed', 'f.vhd', '10M']);
    await ok(['create', '-f', 'vhd', 'd.vhd', '100M']);
    await ok(['create', '-f', 'vhd', '--chs-rounding', 'c.vhd', '100M']);
    const info = async (f: string) => JSON.parse((await ok(['info', '--json', f])).toString());
    assert.equal((await info('d.vdi')).type, 'dynamic');
    assert.equal((await info('f.vdi')).type, 'fixed');
    assert.equal((await info('f.vhd')).capacity, 10 * 2 ** 20);
    assert.equal((await info('d.vhd')).capacity, 100 * 2 ** 20);
    assert.equal((await info('c.vhd')).capacity, 104865792);

    await ok(['meta', 'd.vdi', 'comment', 'made by the CLI test']);
    assert.equal((await ok(['meta', 'd.vdi', 'comment'])).toString(), 'made by the CLI test\n');
    assert.match((await ok(['meta', 'd.vhd'])).toString(), /^creatorApplication = vdkt$/m);

    const data = Buffer.from('data that goes from VMDK to VHD to VDI and back');
    await ok(['create', 'src.vmdk', '16M']);
    await ok(['write', 'src.vmdk', '--offset', '5M'], data);
    await ok(['convert', '-O', 'vhd', 'src.vmdk', 'x.vhd']);
    await ok(['convert', '-O', 'vdi', '-t', 'fixed', 'x.vhd', 'x.vdi']);
    await ok(['convert', '-O', 'vmdk', 'x.vdi', 'back.vmdk']);
    assert.deepEqual(await ok(['read', 'back.vmdk', '--offset', '5M', '--length', String(data.length)]), data);
    assert.equal((await info('x.vdi')).type, 'fixed');

    // differencing children of each, found again through the chain
    assert.match((await ok(['child', 'd.vdi'])).toString(), /d-000001\.vdi: child of d\.vdi \(2 links/);
    assert.match((await ok(['child', 'd.vhd'])).toString(), /d-000001\.vhd: child of d\.vhd \(2 links/);
    await ok(['write', 'd-000001.vhd', '--offset', '1000'], data);
    assert.deepEqual(await ok(['read', 'd-000001.vhd', '--offset', '1000', '--length', String(data.length)]), data);
    const chain = JSON.parse((await ok(['chain', '--json', 'd-000001.vdi'])).toString());
    assert.equal(chain.links.length, 2);
    assert.equal(chain.links[0].parentCid, chain.links[1].cid);
    assert.match((await ok(['chain', 'd-000001.vdi'])).toString(), /parent \(found by id\)/);
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
});

test('CLI: qcow2 and VHDX — create with -o, backing files with -b/-F, child, check', async () => {
  const cwd = await mkdtemp(join(tmpdir(), 'vdkit-cli-q-'));
  try {
    const ok = async (args: string[], input?: Buffer) => {
      const r = await vdkit(args, { cwd, input });
      assert.equal(r.code, 0, `vdkit ${args.join(' ')}: ${r.stderr}`);
      return r.stdout.toString();
    };
    const info = async (f: string) => JSON.parse(await ok(['info', '--json', f]));
    await ok(['create', '-f', 'qcow2', '-o', 'cluster_size=4k', 'a.qcow2', '32M']);
    await ok(['create', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '32M']);
    assert.equal((await info('v2.qcow2')).type, 'v2');
    await ok(['create', '-f', 'vhdx', '-o', 'block_size=1M', 'a.vhdx', '32M']);
    await ok(['create', '-f', 'vhdx', '-t', 'fixed', 'f.vhdx', '8M']);
    assert.equal((await info('f.vhdx')).type, 'fixed');
    await ok(['create', 'base.vmdk', '32M']);
    await ok(['write', 'base.vmdk', '--offset', '1M'], Buffer.from('from the vmdk base'));
    // a qcow2 over a VMDK: any backing format, size from the backing file
    assert.match(await ok(['create', '-f', 'qcow2', '-b', 'base.vmdk', '-F', 'vmdk', 'over.qcow2']), /qcow2 v3 child of base\.vmdk, 33554432 bytes/);
    assert.equal((await info('over.qcow2')).numLinks, 2);
    assert.equal(await ok(['read', 'over.qcow2', '--offset', '1M', '--length', '18']), 'from the vmdk base');
    const wrong = await vdkit(['create', '-f', 'qcow2', '-b', 'base.vmdk', '-F', 'vdi', 'x.qcow2'], { cwd });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /backing file is vmdk, not vdi/);
    assert.match(await ok(['child', 'a.vhdx']), /a-000001\.vhdx: child of a\.vhdx/);
    await ok(['write', 'a-000001.vhdx', '--offset', '100'], Buffer.from('vhdx child'));
    assert.equal(await ok(['read', 'a-000001.vhdx', '--offset', '100', '--length', '10']), 'vhdx child');
    assert.match(await ok(['check', 'a.qcow2']), /No errors were found/);
    assert.match(await ok(['check', 'a.vhdx']), /No errors were found/);
    const usage = await vdkit(['create', '-f', 'qcow2', '-o', 'bogus=1', 'y.qcow2', '1M'], { cwd });
    assert.equal(usage.code, 2);
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
});
