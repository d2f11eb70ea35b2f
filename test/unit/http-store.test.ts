/**
 * The HTTP namespace against the in-test range server (test/helpers/range-server.ts): the
 * block cache (a second read asks the server nothing), read-ahead, HEAD refused, redirects,
 * credentials, an object that changes mid-read, a server that ignores Range, and the faults
 * (dropped connection, stall, short body, wrong Content-Range, 503s) ending in a DiskError
 * within the timeout. Names: relative names resolve against the URL.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DiskError } from '../../src/core/errors.js';
import { Disk } from '../../src/disk.js';
import { HttpNamespace, type HttpNamespaceOptions } from '../../src/storage/http/namespace.js';
import { locate } from '../../src/storage/locations.js';
import { startRangeServer, type Faults } from '../helpers/range-server.js';
import { tmpDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

/** a folder with `big.raw` (8 MiB of a byte pattern) and `tiny.raw` (4 KiB) behind a range server */
async function setup(t: import('node:test').TestContext, faults: Faults = {}) {
  const dir = (await tmpDir(t)).path;
  const big = Buffer.alloc(8 * MiB);
  for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
  const tiny = Buffer.alloc(4096, 0x7e);
  await writeFile(join(dir, 'big.raw'), big);
  await writeFile(join(dir, 'tiny.raw'), tiny);
  const server = await startRangeServer(t, dir, faults);
  return { dir, big, tiny, server };
}

function open(url: string, opts: HttpNamespaceOptions = {}) {
  const { namespace, name } = HttpNamespace.fromUrl(url, opts);
  return { namespace, name, store: () => namespace.open(name) };
}

/** run `p`, expect a DiskError of `code`, and return it with the time it took */
async function failsWith(p: Promise<unknown>, code: string, text?: RegExp): Promise<{ err: DiskError; ms: number }> {
  const t0 = Date.now();
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof DiskError, `a DiskError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (text) assert.match(err.message, text);
    return { err, ms: Date.now() - t0 };
  }
  assert.fail(`expected ${code}`);
}

test('a second read of the same range asks the server nothing; bytes equal the file', async (t) => {
  const { big, server } = await setup(t);
  const st = await open(`${server.url}/big.raw`, { readAheadBlocks: 0 }).store();
  t.after(() => st.close());
  const a = await st.read(3 * MiB + 100, 4096);
  assert.deepEqual(a, big.subarray(3 * MiB + 100, 3 * MiB + 4196));
  const before = server.log.length;
  const b = await st.read(3 * MiB + 100, 4096);
  const c = await st.read(3 * MiB + 5000, 1000);
  assert.equal(server.log.length, before, 'no request for cached bytes');
  assert.deepEqual(b, a);
  assert.deepEqual(c, big.subarray(3 * MiB + 5000, 3 * MiB + 6000));
  // a read across a block boundary is two blocks, the cached one not asked for again
  const d = await st.read(4 * MiB - 10, 20);
  assert.deepEqual(d, big.subarray(4 * MiB - 10, 4 * MiB + 10));
  assert.equal(server.gets(), 2);
  assert.equal(await st.size(), big.length);
});

test('sequential reads fetch ahead: a scan in 64 KiB reads costs one GET per block, most of them read-ahead', async (t) => {
  const { big, server } = await setup(t);
  const st = await open(`${server.url}/big.raw`).store();
  t.after(() => st.close());
  const out = Buffer.alloc(big.length);
  for (let at = 0; at < big.length; at += 65536) await st.readInto(out.subarray(at, at + 65536), at);
  assert.ok(out.equals(big));
  assert.equal(server.gets(), 8, 'each 1 MiB block fetched once');
  assert.ok(st.stats.prefetches >= 4, `read-ahead fetched blocks (${st.stats.prefetches})`);
  // beyond the end is an error, not zeros
  await failsWith(st.read(big.length - 10, 20), 'OUTOFRANGE');
});

test('a cache smaller than the object evicts the oldest blocks and reads them again', async (t) => {
  const { big, server } = await setup(t);
  const st = await open(`${server.url}/big.raw`, { cacheBytes: 2 * MiB, readAheadBlocks: 0 }).store();
  t.after(() => st.close());
  for (const b of [0, 1, 2, 0]) assert.deepEqual(await st.read(b * MiB, 16), big.subarray(b * MiB, b * MiB + 16));
  assert.equal(server.gets(), 4, 'block 0 was evicted by 1 and 2 and fetched again');
});

test('HEAD refused (405): the size comes from a GET of byte 0', async (t) => {
  const { big, server } = await setup(t, { noHead: true });
  const st = await open(`${server.url}/big.raw`).store();
  t.after(() => st.close());
  assert.equal(await st.size(), big.length);
  assert.ok(server.log.some((r) => r.method === 'GET' && r.range === 'bytes=0-0'));
  assert.deepEqual(await st.read(7 * MiB, 8), big.subarray(7 * MiB, 7 * MiB + 8));
});

test('an object changed mid-read fails with a clear error, and the store stays failed (no mixed data)', async (t) => {
  const { server } = await setup(t);
  const st = await open(`${server.url}/big.raw`, { readAheadBlocks: 0 }).store();
  t.after(() => st.close());
  await st.read(0, 512);
  server.bump('big.raw');
  const { err } = await failsWith(st.read(5 * MiB, 512), 'FILEIO', /changed while it was being read/);
  assert.match(err.message, /big\.raw/);
  assert.equal(err.details.field, 'ETag');
  await failsWith(st.read(6 * MiB, 512), 'FILEIO', /changed/);

});

test('a server that ignores If-Match and If-Range but sends the new ETag with the 206 is caught too', async (t) => {
  const { server } = await setup(t, { ignoreConditions: true, changeAfterGets: 1 });
  const st = await open(`${server.url}/big.raw`, { readAheadBlocks: 0 }).store();
  t.after(() => st.close());
  await st.read(0, 512);
  await st.read(MiB, 512);
  const { err } = await failsWith(st.read(2 * MiB, 512), 'FILEIO', /changed while it was being read/);
  assert.equal(err.details.field, 'ETag');
  assert.notEqual(err.details.expected, err.details.found);
});

test('a server that ignores Range is refused with NOTSUPPORTED; a tiny object is taken whole', async (t) => {
  const { tiny, server } = await setup(t, { ignoreRange: true });
  const st = await open(`${server.url}/big.raw`).store();
  t.after(() => st.close());
  const { err } = await failsWith(st.read(MiB, 100), 'NOTSUPPORTED', /ignores Range/);
  assert.match(err.message, /big\.raw/);
  // through the Disk API too: format detection reads the first bytes
  await failsWith(Disk.open(`${server.url}/big.raw`, { readOnly: true }), 'NOTSUPPORTED', /ignores Range/);

  server.faults.noHead = true;
  const small = await open(`${server.url}/tiny.raw`).store();
  t.after(() => small.close());
  assert.deepEqual(await small.read(100, 50), tiny.subarray(100, 150));
  const gets = server.log.filter((r) => r.method === 'GET').length;
  await small.read(2000, 50);
  assert.equal(server.log.filter((r) => r.method === 'GET').length, gets, 'the whole tiny object was kept');
});

const quick: HttpNamespaceOptions = { timeoutMs: 400, retries: 1, retryDelayMs: 20, readAheadBlocks: 0 };

for (const [label, faults, text] of [
  ['a dropped connection', { dropAfter: 1000 }, /closed after|failed after 2 tries/],
  ['a stall', { stall: true }, /stalled|no answer/],
  ['a short body', { shortBy: 100 }, /Content-Length|short body/],
  ['a wrong Content-Range', { shiftRange: 512 }, /other bytes than asked/],
] as [string, Faults, RegExp][]) {
  test(`faults: ${label} is a DiskError naming the URL within the timeout`, async (t) => {
    const { server } = await setup(t);
    const st = await open(`${server.url}/big.raw`, quick).store();
    t.after(() => st.close());
    Object.assign(server.faults, faults);
    const { err, ms } = await failsWith(st.read(2 * MiB, 4096), 'FILEIO', text);
    assert.match(err.message, new RegExp(`${server.url}/big\\.raw`));
    assert.ok(ms < 3000, `failed in ${ms} ms`);
  });
}

test('503s are retried with backoff; redirects are followed, at most 5', async (t) => {
  const { big, server } = await setup(t, { fail503: 2, redirects: true });
  const st = await open(`${server.url}/r/big.raw`, { retryDelayMs: 10 }).store();
  t.after(() => st.close());
  assert.deepEqual(await st.read(MiB, 64), big.subarray(MiB, MiB + 64));
  assert.equal(st.name, `${server.url}/r/big.raw`);
  // the redirect is followed once, at open: the GETs go to where it led
  assert.ok(server.log.filter((r) => r.url === '/r/big.raw').length <= 3);
  await failsWith(open(`${server.url}/loop`, { retryDelayMs: 10 }).store(), 'FILEIO', /more than 5 redirects/);
  assert.equal(server.log.filter((r) => r.url === '/loop').length, 6);
});

test('credentials in the URL become Basic auth for that origin and are never in a name or a message', async (t) => {
  const { big, server } = await setup(t, { auth: `Basic ${Buffer.from('bob:s3cret').toString('base64')}` });
  const url = `http://bob:s3cret@127.0.0.1:${server.port}/big.raw`;
  const loc = (await locate(url))!;
  assert.equal(loc.name, `${server.url}/big.raw`);
  assert.ok(!loc.namespace.label.includes('s3cret'));
  const d = await Disk.open(url, { readOnly: true });
  t.after(() => d.close());
  assert.equal(d.capacity, big.length);
  assert.ok(!JSON.stringify(await d.info()).includes('s3cret'));
  const { err } = await failsWith(Disk.open(`http://bob:s3cret@127.0.0.1:${server.port}/missing.raw`, { readOnly: true }), 'FILENOTFOUND');
  assert.ok(!err.message.includes('s3cret'));
  await failsWith(Disk.open(`http://bob:wrong@127.0.0.1:${server.port}/big.raw`, { readOnly: true }), 'FILENOPERMISSION');
});

test('names resolve against the URL; writes and creates are RDONLY', async (t) => {
  const { namespace: ns } = HttpNamespace.fromUrl('https://u:p@example.test:8443/a/b/disk.vmdk?x=1');
  assert.equal(ns.absolute('https://example.test:8443/a/b/disk.vmdk'), 'https://example.test:8443/a/b/disk.vmdk');
  assert.equal(ns.resolve('https://example.test:8443/a/b/disk.vmdk', 'disk-s001.vmdk'), 'https://example.test:8443/a/b/disk-s001.vmdk');
  assert.equal(ns.resolve('https://example.test:8443/a/b/c.vhd', '../base.vhd'), 'https://example.test:8443/a/base.vhd');
  assert.equal(ns.resolve('https://example.test:8443/a/b/c.vhd', '.\\base.vhd'), 'https://example.test:8443/a/b/base.vhd');
  assert.equal(ns.resolve('https://example.test:8443/a/b/c.vhd', 'my disk.vhd'), 'https://example.test:8443/a/b/my%20disk.vhd');
  // the POSIX name helpers turn "https://h/d" + "x" into "https:/h/d/x": that form is taken back
  assert.equal(ns.absolute('https:/example.test:8443/a/x.vmdk'), 'https://example.test:8443/a/x.vmdk');
  assert.equal(ns.absolute('/z/y.raw'), 'https://example.test:8443/z/y.raw');
  assert.equal(ns.absolute('https://example.test:8443/a/'), 'https://example.test:8443/a');
  assert.equal(ns.resolve('https://example.test:8443/a/c.vhd', 'C:x.vhd'), 'https://example.test:8443/a/C:x.vhd');
  await failsWith(ns.open('https://example.test:8443/a/b/disk.vmdk', { write: true }), 'RDONLY', /read-only/);
  await failsWith(ns.create('x.raw'), 'RDONLY', /read-only/);
  await failsWith(ns.remove('x.raw'), 'RDONLY');
  assert.deepEqual(await ns.list('https://example.test:8443/a'), []);
  const { server } = await setup(t);
  const st = await open(`${server.url}/big.raw`).store();
  t.after(() => st.close());
  await failsWith(st.write(0, Buffer.alloc(1)), 'RDONLY', /read-only/);
});
