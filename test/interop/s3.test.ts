/**
 * s3:// end to end against a local S3 (s3rver behind the front server of test/helpers/s3.ts,
 * which also recomputes every request's SigV4 signature, implements ListMultipartUploads and
 * AbortMultipartUpload, and lets a test interfere). The CLI runs as a child with the standard
 * AWS environment (AWS_ACCESS_KEY_ID..., AWS_ENDPOINT_URL); images are made by qemu-img and
 * uploaded as they are; what vdkit writes is downloaded and judged by qemu-img compare.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { S3Client, PutObjectCommand, GetObjectCommand, ListObjectsV2Command, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { repoRoot, run, skipUnless, tmpDir, describeRun, type TmpDir } from '../helpers/tools.js';
import { ACCESS_KEY, REGION, SECRET_KEY, startLocalS3, type LocalS3 } from '../helpers/s3.js';
import { DiskError } from '../../src/core/errors.js';

const MiB = 1024 * 1024;
const BUCKET = 'disks';
let s3: LocalS3;
let tmp: TmpDir;
let client: S3Client;

before(async () => {
  s3 = await startLocalS3([BUCKET]);
  tmp = await tmpDir(undefined, 'vdkit-s3-');
  // the in-process API reads the same environment a child CLI gets
  Object.assign(process.env, s3.env);
  client = new S3Client({ endpoint: s3.endpoint, forcePathStyle: true, region: REGION, credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY } });
});

after(async () => {
  client?.destroy();
  await s3?.stop();
  await tmp?.cleanup();
});

const bin = join(repoRoot(), 'bin', 'vdkit.js');
const vdkit = (args: string[], env: NodeJS.ProcessEnv = {}) => run(process.execPath, [bin, ...args], { cwd: tmp.path, env: { ...process.env, ...s3.env, ...env } });
async function ok(cmd: string, args: string[], env?: NodeJS.ProcessEnv) {
  const r = cmd === 'vdkit' ? await vdkit(args, env) : await run(cmd, args, { cwd: tmp.path });
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r;
}

async function put(key: string, file: string): Promise<void> {
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: await readFile(join(tmp.path, file)) }));
}
async function get(key: string, file: string): Promise<void> {
  const r = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  await writeFile(join(tmp.path, file), await r.Body!.transformToByteArray());
}
async function keys(prefix = ''): Promise<string[]> {
  const r = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }));
  return (r.Contents ?? []).map((o) => o.Key!);
}
async function pendingUploads(): Promise<string[]> {
  const r = await client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET }));
  return (r.Uploads ?? []).map((u) => `${u.Key} ${u.UploadId}`);
}

/** a 32 MiB raw disk with data in a few places, made through qemu-io */
async function makeSource(name: string): Promise<void> {
  await ok('qemu-img', ['create', '-f', 'raw', name, '32M']);
  await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 64k', '-c', 'write -P 0x11 1M 3M', '-c', 'write -P 0xa5 20M 512k', '-c', 'write -P 0x77 32704k 64k', name]);
}

test('every format, a multi-file VMDK and a 2-link chain read from s3:// as from local files (checksum, compare, info --json, serve)', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  await makeSource('fmt.raw');
  const images: [string, string[]][] = [
    ['fmt.raw', []],
    ['fmt.qcow2', ['-O', 'qcow2']],
    ['fmt.vmdk', ['-O', 'vmdk']],
    ['stream.vmdk', ['-O', 'vmdk', '-o', 'subformat=streamOptimized']],
    ['split.vmdk', ['-O', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse']],
    ['fmt.vhd', ['-O', 'vpc']],
    ['fixed.vhd', ['-O', 'vpc', '-o', 'subformat=fixed']],
    ['fmt.vhdx', ['-O', 'vhdx']],
    ['fmt.vdi', ['-O', 'vdi']],
  ];
  for (const [name, args] of images) if (name !== 'fmt.raw') await ok('qemu-img', ['convert', '-f', 'raw', ...args, 'fmt.raw', name]);
  // a child with its own data over a base, the parent named relative to the child
  await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', 'fmt.raw', 'base.qcow2']);
  await ok('qemu-img', ['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'child.qcow2']);
  await ok('qemu-io', ['-c', 'write -P 0xc3 2M 1M', '-c', 'write -z 20M 64k', 'child.qcow2']);
  const files = [...images.map(([n]) => n), 'split-s001.vmdk', 'base.qcow2', 'child.qcow2'];
  for (const f of files) await put(`fmt/${f}`, f);

  for (const name of [...images.map(([n]) => n), 'child.qcow2']) {
    const local = (await ok('vdkit', ['checksum', name])).stdout.split(/\s+/)[0];
    const remote = await ok('vdkit', ['checksum', `s3://${BUCKET}/fmt/${name}`]);
    assert.equal(remote.stdout.split(/\s+/)[0], local, `${name}: checksum over s3 = local`);
    await ok('vdkit', ['compare', name, `s3://${BUCKET}/fmt/${name}`]);
  }
  const info = JSON.parse((await ok('vdkit', ['info', '--json', `s3://${BUCKET}/fmt/child.qcow2?path-style=1`])).stdout);
  assert.equal(info.numLinks, 2);
  const text = JSON.stringify(info);
  assert.ok(text.includes(`s3://${BUCKET}/fmt/base.qcow2`), `the parent is named by its URL: ${text}`);
  assert.ok(!text.includes('path-style') && !text.includes(SECRET_KEY.toLowerCase() + '@'), text);
  // map skips what block status says is not there, as for the local file
  const map = (await ok('vdkit', ['map', '--json', `s3://${BUCKET}/fmt/fmt.qcow2`])).stdout;
  assert.equal(map, (await ok('vdkit', ['map', '--json', 'fmt.qcow2'])).stdout);

  if (skipUnless(t, 'nbdcopy')) {
    await ok('vdkit', ['serve', `s3://${BUCKET}/fmt/child.qcow2`, '-r', '-p', '0', '--run', 'nbdcopy "$NBD_URI" served.raw']);
    await ok('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', 'child.qcow2', 'served.raw']);
  }
  assert.deepEqual(s3.signatures.bad, [], 'every request signed right');
  assert.ok(s3.signatures.checked > 20, `signatures checked: ${s3.signatures.checked}`);
});

test('convert to s3:// as raw and streamOptimized (one multipart upload) and qcow2 / fixed VHD (spooled): qemu-img compare equal, nothing left behind', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  await makeSource('out-src.raw');
  await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', 'out-src.raw', 'out-src.qcow2']);
  const outs: [string, string[], string][] = [
    ['out.raw', ['-O', 'raw'], 'raw'],
    ['out.vmdk', ['-O', 'vmdk', '-o', 'subformat=streamOptimized'], 'vmdk'],
    ['out.qcow2', ['-O', 'qcow2'], 'qcow2'],
    ['out.vhd', ['-O', 'vpc', '-o', 'subformat=fixed'], 'vpc'],
  ];
  for (const [name, args, fmt] of outs) {
    const from = s3.log.length;
    await ok('vdkit', ['convert', 'out-src.qcow2', `s3://${BUCKET}/out/${name}`, ...args]);
    const seen = s3.log.slice(from);
    assert.ok(!seen.some((l) => l.includes('vdkit-partial')), `${name}: no hidden name reached the store: ${seen.join('\n')}`);
    if (fmt === 'raw') assert.ok(seen.filter((l) => l.includes('x-id=UploadPart')).length >= 4, `raw is one multipart upload of 8 MiB parts: ${seen.join('\n')}`);
    await get(`out/${name}`, `down-${name}`);
    await ok('qemu-img', ['compare', '-f', 'qcow2', '-F', fmt, 'out-src.qcow2', `down-${name}`]);
  }
  assert.deepEqual((await keys('out/')).sort(), outs.map(([n]) => `out/${n}`).sort());
  assert.deepEqual(await pendingUploads(), []);
  // an existing object is not replaced without --overwrite
  const again = await vdkit(['convert', 'out-src.qcow2', `s3://${BUCKET}/out/out.raw`, '-O', 'raw']);
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /FILEEXISTS/);
});

test('an upload aborted midway (AbortSignal in the API) leaves no object and no pending parts', async () => {
  const { Disk } = await import('../../src/disk.js');
  const { convert } = await import('../../src/ops/convert.js');
  const { S3Namespace } = await import('../../src/storage/s3/namespace.js');
  // 40 MiB of random bytes: incompressible, so the outputs are several 8 MiB parts
  await writeFile(join(tmp.path, 'noise.raw'), randomBytes(40 * MiB));
  for (const [name, extra] of [
    ['abort.raw', { format: 'raw' }],
    ['abort.vmdk', { format: 'vmdk', type: 'streamOptimized' }],
  ] as const) {
    const ac = new AbortController();
    let parts = 0;
    s3.fault = (req) => {
      if (req.method === 'PUT' && req.url!.includes('partNumber=') && ++parts === 2) ac.abort(new Error('test stops it'));
      return false;
    };
    const { namespace, name: target } = await S3Namespace.fromUrl(`s3://${BUCKET}/abort/${name}`);
    const src = await Disk.open(join(tmp.path, 'noise.raw'), { readOnly: true });
    try {
      await assert.rejects(
        convert(src, target, { ...extra, namespace, signal: ac.signal }),
        (e: unknown) => e instanceof DiskError && e.code === 'CANCELLED',
      );
    } finally {
      await src.close();
      s3.fault = undefined;
    }
    assert.ok(parts >= 2, `${name}: parts were on their way when it stopped (${parts})`);
    assert.deepEqual(await keys('abort/'), [], `${name}: no object`);
    assert.deepEqual(await pendingUploads(), [], `${name}: no pending parts`);
  }
});

test('Ctrl-C on `vdkit convert ... s3://` mid-upload leaves no object and no pending parts; a spooled target too', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  await writeFile(join(tmp.path, 'noise2.raw'), randomBytes(40 * MiB));
  for (const [name, args] of [
    ['killed.vmdk', ['-O', 'vmdk', '-o', 'subformat=streamOptimized']],
    ['killed.qcow2', ['-O', 'qcow2']],
  ] as const) {
    const child = spawn(process.execPath, [bin, 'convert', 'noise2.raw', `s3://${BUCKET}/killed/${name}`, ...args], { cwd: tmp.path, env: { ...process.env, ...s3.env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // the sequential upload: stopped at its first part; the spooled one: while the image is
    // built (its listing for stale partial names comes just before). One Ctrl-C: a second one
    // ends the process at once, as everywhere in vdkit.
    let sent = false;
    const when = name.endsWith('.vmdk') ? (url: string, method: string) => method === 'PUT' && url.includes('partNumber=') : (url: string, method: string) => method === 'GET' && url.includes('list-type=2');
    s3.fault = (req) => {
      if (!sent && when(req.url!, req.method!)) sent = child.kill('SIGINT');
      return false;
    };
    const code = await exited;
    s3.fault = undefined;
    assert.notEqual(code, 0, `${name}: the convert was stopped (${stderr})`);
    assert.deepEqual(await keys('killed/'), [], `${name}: no object (${stderr})`);
    assert.deepEqual(await pendingUploads(), [], `${name}: no pending parts`);
  }
});

test('an object replaced while it is read is an error (If-Match sent, the reply ETag checked), not mixed data', async () => {
  const { S3Namespace } = await import('../../src/storage/s3/namespace.js');
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'change/x.raw', Body: Buffer.alloc(4 * MiB, 0x11) }));
  const { namespace, name } = await S3Namespace.fromUrl(`s3://${BUCKET}/change/x.raw`);
  const store = await namespace.open(name);
  const ifMatch: (string | undefined)[] = [];
  s3.fault = (req) => {
    if (req.method === 'GET' && req.headers.range) ifMatch.push(req.headers['if-match'] as string | undefined);
    return false;
  };
  try {
    assert.deepEqual(await store.read(0, 4096), Buffer.alloc(4096, 0x11));
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'change/x.raw', Body: Buffer.alloc(4 * MiB, 0x22) }));
    // block 0 is cached: it still reads the old bytes; block 3 must come from the new object
    await assert.rejects(store.read(3 * MiB, 4096), (e: unknown) => e instanceof DiskError && e.code === 'FILEIO' && /changed/.test(e.message));
  } finally {
    s3.fault = undefined;
    await store.close();
  }
  assert.ok(ifMatch.length >= 2 && ifMatch.every((h) => h && /^"[0-9a-f]+"$/.test(h)), `If-Match on every ranged GET: ${ifMatch}`);
});

test('a request signed with the wrong secret is refused by the verifying front server (the signature check can fail)', async () => {
  const bad = s3.signatures.bad.length;
  const r = await vdkit(['info', `s3://${BUCKET}/change/x.raw`], { AWS_SECRET_ACCESS_KEY: 'not-the-secret' });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /FILENOPERMISSION|SignatureDoesNotMatch/);
  assert.ok(s3.signatures.bad.length > bad);
  s3.signatures.bad.length = bad;
});

test('multipart upload of a large sparse streamOptimized conversion keeps the CLI under 256 MiB peak RSS (VmHWM)', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  // 1 GiB virtual, 48 MiB of incompressible data in 12 places; bench/s3-upload.ts does 5 GiB
  const fh = await open(join(tmp.path, 'sparse.raw'), 'w');
  try {
    await fh.truncate(1024 * MiB);
    for (let i = 0; i < 12; i++) await fh.write(randomBytes(4 * MiB), 0, 4 * MiB, i * 85 * MiB);
  } finally {
    await fh.close();
  }
  const from = s3.log.length;
  const child = spawn(process.execPath, [bin, 'convert', 'sparse.raw', `s3://${BUCKET}/big/sparse.vmdk`, '-O', 'vmdk', '-o', 'subformat=streamOptimized'], { cwd: tmp.path, env: { ...process.env, ...s3.env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  let peak = 0;
  const poll = setInterval(async () => {
    const status = await readFile(`/proc/${child.pid}/status`, 'utf8').catch(() => '');
    const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
    peak = Math.max(peak, kb * 1024);
  }, 25);
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  clearInterval(poll);
  assert.equal(code, 0, stderr);
  const parts = s3.log.slice(from).filter((l) => l.includes('x-id=UploadPart')).length;
  assert.ok(parts >= 5, `a multipart upload of several parts (${parts})`);
  assert.ok(peak > 0 && peak < 256 * MiB, `peak RSS ${(peak / MiB).toFixed(1)} MiB`);
  t.diagnostic(`peak RSS ${(peak / MiB).toFixed(1)} MiB over ${parts} parts`);
  await get('big/sparse.vmdk', 'down-sparse.vmdk');
  await ok('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', 'sparse.raw', 'down-sparse.vmdk']);
  assert.deepEqual(await pendingUploads(), []);
});
