/**
 * The NBD client against real servers: qemu-nbd, nbdkit (memory, file, delay) and `vdkit serve`
 * (plain, X.509, PSK). nbdinfo and qemu-img are the oracles: vdkit's map of an export equals
 * nbdinfo --map's data ranges, a convert through nbd:// equals the source per qemu-img compare,
 * bytes written through the client read back through qemu-img's own NBD client.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile, copyFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk } from '../../src/disk.js';
import { DiskError } from '../../src/core/errors.js';
import { NbdNamespace } from '../../src/nbd/client/namespace.js';
import type { NbdStore } from '../../src/nbd/client/store.js';
import { runVdkit, skipUnless, tmpDir, describeRun } from '../helpers/tools.js';
import { MiB, SIZE, background, makeFixture, merge, nbdinfoMap, ok, startServer, type Range } from './nbd-support.js';

/** wait until a server has made its Unix socket */
async function socketReady(path: string, child?: { exitCode: number | null; stderrText?: string }): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await stat(path).then(() => true, () => false)) return;
    if (child && child.exitCode !== null) throw new Error(`server exited: ${child.stderrText ?? ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no socket at ${path}`);
}

async function vdkit(args: string[], cwd: string): Promise<string> {
  const r = await runVdkit(args, cwd);
  assert.equal(r.code, 0, describeRun('vdkit', args, r));
  return r.stdout;
}

const unix = (sock: string, name = '') => `nbd+unix:///${name}?socket=${sock}`;

/** data ranges of `vdkit map --output=json` */
async function vdkitDataRanges(uri: string, cwd: string, format?: string): Promise<Range[]> {
  const out = await vdkit(['map', ...(format ? ['-f', format] : []), '--output=json', uri], cwd);
  return merge((JSON.parse(out) as { start: number; length: number; data: boolean }[]).filter((e) => e.data).map((e) => [e.start, e.length]));
}

test('qemu-nbd: info, map equal to nbdinfo --map, convert equal per qemu-img compare, writes read back by qemu-img', async (t) => {
  if (!skipUnless(t, 'qemu-nbd', 'qemu-img', 'qemu-io', 'nbdinfo')) return;
  const dir = (await tmpDir(t)).path;
  const fx = await makeFixture(dir, 'qcow2');
  const sock = join(dir, 'q.sock');
  const q = background(t, 'qemu-nbd', ['-k', sock, '-f', 'qcow2', '-e', '4', '-t', fx.path]);
  await socketReady(sock, q as never);
  const uri = unix(sock);

  const info = JSON.parse(await vdkit(['info', '--json', uri], dir)) as { capacity: number; format: string };
  assert.equal(info.capacity, SIZE);
  assert.equal(info.format, 'raw');

  const theirs = merge((await nbdinfoMap(uri)).filter(([, , type]) => (type & 1) === 0).map(([o, l]) => [o, l]));
  assert.deepEqual(await vdkitDataRanges(uri, dir), theirs);
  assert.ok(theirs.length >= 3, 'the fixture is sparse');

  await vdkit(['convert', uri, 'out.qcow2'], dir);
  await ok('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', join(dir, 'out.qcow2'), fx.model]);
  await vdkit(['convert', '-O', 'vhdx', uri, 'out.vhdx'], dir);
  await ok('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', join(dir, 'out.vhdx'), fx.model]);

  // writes through the Disk API, unaligned and across the 64 KiB blocks, flushed, closed
  const d = await Disk.open(uri);
  const a = Buffer.alloc(100_000, 0x5a);
  await d.write(3 * MiB + 123, a);
  await d.flush();
  await d.close();
  await ok('qemu-io', ['-f', 'raw', '-r', '-c', `read -P 0x5a ${3 * MiB + 123} 100000`, '-c', `read -P 0 ${3 * MiB} 123`, uri]);
});

test('nbdkit memory: vdkit convert writes into the export (as -n), qemu-img reads it back; a read-only export refuses writes (Disk API and vdkit write)', async (t) => {
  if (!skipUnless(t, 'nbdkit', 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const fx = await makeFixture(dir, 'qcow2');
  const sock = join(dir, 'm.sock');
  const k = background(t, 'nbdkit', ['-f', '-U', sock, 'memory', String(SIZE)]);
  await socketReady(sock, k as never);
  const uri = unix(sock);
  await vdkit(['convert', fx.path, uri], dir);
  await ok('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri, fx.model]);

  const ro = join(dir, 'r.sock');
  const r = background(t, 'nbdkit', ['-f', '-r', '-U', ro, 'memory', String(SIZE)]);
  await socketReady(ro, r as never);
  await assert.rejects(Disk.open(unix(ro)), (e: unknown) => e instanceof DiskError && e.code === 'RDONLY' && e.message.includes(unix(ro)));
  const res = await runVdkit(['write', '--offset', '0', '--input', fx.model, unix(ro)], dir);
  assert.notEqual(res.code, 0);
  assert.match(res.stderr, /RDONLY/);
});

test('nbdkit file over a qcow2 file: -f qcow2 nbd:// reads (info, convert, check, checksum) the image inside the export', async (t) => {
  if (!skipUnless(t, 'nbdkit', 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const fx = await makeFixture(dir, 'qcow2');
  const sock = join(dir, 'f.sock');
  const k = background(t, 'nbdkit', ['-f', '-r', '-U', sock, 'file', fx.path]);
  await socketReady(sock, k as never);
  const uri = unix(sock);
  const info = JSON.parse(await vdkit(['info', '--json', '-f', 'qcow2', uri], dir)) as { capacity: number; format: string };
  assert.deepEqual([info.format, info.capacity], ['qcow2', SIZE]);
  const raw = JSON.parse(await vdkit(['info', '--json', uri], dir)) as { capacity: number; format: string };
  assert.deepEqual([raw.format, raw.capacity], ['raw', (await stat(fx.path)).size]);
  await vdkit(['convert', '-f', 'qcow2', '-O', 'raw', uri, 'out.raw'], dir);
  assert.ok((await readFile(join(dir, 'out.raw'))).equals(await readFile(fx.model)));
  assert.match(await vdkit(['check', '-f', 'qcow2', uri], dir), /No errors/);
  const sums = await Promise.all([vdkit(['checksum', '-f', 'qcow2', uri], dir), vdkit(['checksum', fx.path], dir)]);
  assert.equal(sums[0].split(/\s+/)[0], sums[1].split(/\s+/)[0]);
});

test('vdkit serve with multi-conn: parallel reads spread over several connections, counted on the server', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const fx = await makeFixture(dir, 'qcow2');
  const server = await startServer(t, { images: [{ path: fx.path, name: 'disk' }], listen: { socket: join(dir, 'v.sock') }, readOnly: true });
  const { namespace, name } = await NbdNamespace.fromUri(unix(join(dir, 'v.sock'), 'disk'));
  const st = (await namespace.open(name)) as NbdStore;
  const model = await readFile(fx.model);
  let most = 0;
  const chunk = 256 * 1024;
  const parts = [];
  for (let at = 0; at < SIZE; at += chunk) {
    parts.push(
      st.read(at, chunk).then((b) => {
        most = Math.max(most, server.connections);
        assert.ok(b.equals(model.subarray(at, at + chunk)), `bytes at ${at}`);
      }),
    );
  }
  await Promise.all(parts);
  // a second pass once the pool has grown
  await Promise.all(Array.from({ length: 16 }, (_, i) => st.read(i * chunk, chunk).then(() => (most = Math.max(most, server.connections)))));
  assert.ok(st.connectionsOpened > 1 && st.connectionsOpened <= 4, `connections opened: ${st.connectionsOpened}`);
  assert.ok(most > 1, `the server saw at most ${most} connection(s)`);
  await st.close();
  // a server without CAN_MULTI_CONN gets one connection
  const one = await startServer(t, { images: [{ path: fx.path, name: 'disk' }], listen: { socket: join(dir, 'one.sock') }, readOnly: true, shared: 1 });
  const ns1 = await NbdNamespace.fromUri(unix(join(dir, 'one.sock'), 'disk'));
  const s1 = (await ns1.namespace.open(ns1.name)) as NbdStore;
  await Promise.all(Array.from({ length: 16 }, (_, i) => s1.read(i * chunk, chunk)));
  assert.equal(s1.connectionsOpened, 1);
  await s1.close();
  void one;
});

async function makeCreds(dir: string): Promise<{ serverDir: string; clientDir: string; pskFile: string; wrongPsk: string }> {
  const s = join(dir, 'server');
  const c = join(dir, 'client');
  await Promise.all([mkdir(s), mkdir(c)]);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await ok('openssl', ['req', '-x509', '-new', ...ec, '-keyout', join(dir, 'ca-key.pem'), '-out', join(s, 'ca-cert.pem'), '-days', '2', '-subj', '/CN=vdkit test CA']);
  await copyFile(join(s, 'ca-cert.pem'), join(c, 'ca-cert.pem'));
  await writeFile(join(dir, 'server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n');
  await writeFile(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n');
  const sign = async (who: string, keyOut: string, certOut: string, cn: string) => {
    const csr = join(dir, `${who}.csr`);
    await ok('openssl', ['req', '-new', ...ec, '-keyout', keyOut, '-out', csr, '-subj', `/CN=${cn}`]);
    await ok('openssl', ['x509', '-req', '-in', csr, '-CA', join(s, 'ca-cert.pem'), '-CAkey', join(dir, 'ca-key.pem'), '-set_serial', who === 'server' ? '1' : '2', '-out', certOut, '-days', '2', '-extfile', join(dir, `${who}.ext`)]);
  };
  await Promise.all([sign('server', join(s, 'server-key.pem'), join(s, 'server-cert.pem'), 'localhost'), sign('client', join(c, 'client-key.pem'), join(c, 'client-cert.pem'), 'client')]);
  const key = (await ok('openssl', ['rand', '-hex', '32'])).stdout.trim();
  await writeFile(join(dir, 'keys.psk'), `alice:${key}\n`);
  await writeFile(join(dir, 'wrong.psk'), `alice:${'0'.repeat(64)}\n`);
  return { serverDir: s, clientDir: c, pskFile: join(dir, 'keys.psk'), wrongPsk: join(dir, 'wrong.psk') };
}

test('TLS against vdkit serve --tls require: X.509 (server name checked, client certificate presented) and PSK; plaintext and a wrong key refused', async (t) => {
  if (!skipUnless(t, 'openssl', 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const [creds, fx] = await Promise.all([makeCreds(dir), makeFixture(dir, 'qcow2')]);
  const model = await readFile(fx.model);
  const x509 = await startServer(t, { images: [{ path: fx.path, name: 'disk' }], listen: { host: '127.0.0.1', port: 0 }, readOnly: true, tls: { mode: 'require', x509Dir: creds.serverDir } });
  const psk = await startServer(t, { images: [{ path: fx.path, name: 'disk' }], listen: { host: '127.0.0.1', port: 0 }, readOnly: true, tls: { mode: 'require', pskFile: creds.pskFile } });
  const port = (s: typeof x509) => (s.address as { port: number }).port;
  const readAll = async (uri: string) => {
    const d = await Disk.open(uri, { readOnly: true });
    try {
      return await d.read(0, d.capacity);
    } finally {
      await d.close();
    }
  };
  // the certificate names localhost: connect by that name
  assert.ok((await readAll(`nbds://localhost:${port(x509)}/disk?tls-certificates=${creds.clientDir}`)).equals(model));
  assert.ok((await readAll(`nbds://alice@127.0.0.1:${port(psk)}/disk?tls-psk-file=${creds.pskFile}`)).equals(model));
  // CLI, and --json names the URI without its credentials
  const info = JSON.parse(await vdkit(['info', '--json', `nbds://127.0.0.1:${port(psk)}/disk?tls-psk-file=${creds.pskFile}&tls-username=alice`], dir)) as { capacity: number; path?: string };
  assert.equal(info.capacity, SIZE);
  const text = JSON.stringify(info);
  assert.ok(!text.includes('psk') && text.includes(`nbds://127.0.0.1:${port(psk)}/disk`), text);

  await assert.rejects(readAll(`nbd://127.0.0.1:${port(x509)}/disk`), (e: unknown) => e instanceof DiskError && /TLS/.test(e.message));
  await assert.rejects(readAll(`nbds://alice@127.0.0.1:${port(psk)}/disk?tls-psk-file=${creds.wrongPsk}`), (e: unknown) => e instanceof DiskError && e.details.field === 'tls');
  // a certificate for another name is refused
  await assert.rejects(readAll(`nbds://127.0.0.1:${port(x509)}/disk?tls-certificates=${creds.clientDir}&tls-hostname=elsewhere.example`), (e: unknown) => e instanceof DiskError && e.details.field === 'tls');
});

test('TLS PSK against nbdkit --tls=require', async (t) => {
  if (!skipUnless(t, 'nbdkit', 'openssl')) return;
  const dir = (await tmpDir(t)).path;
  const key = (await ok('openssl', ['rand', '-hex', '32'])).stdout.trim();
  await writeFile(join(dir, 'keys.psk'), `alice:${key}\n`);
  const sock = join(dir, 'k.sock');
  const k = background(t, 'nbdkit', ['-f', '-U', sock, '--tls=require', `--tls-psk=${join(dir, 'keys.psk')}`, 'pattern', String(MiB)]);
  await socketReady(sock, k as never);
  const d = await Disk.open(`nbds+unix:///?socket=${sock}&tls-psk-file=${join(dir, 'keys.psk')}&tls-username=alice`, { readOnly: true });
  const b = await d.read(4096, 16);
  await d.close();
  // nbdkit pattern: every 8 bytes hold their own offset, big-endian
  assert.equal(b.readBigUInt64BE(0), 4096n);
  assert.equal(b.readBigUInt64BE(8), 4104n);
});

test('a server killed mid-read: the read fails with a DiskError naming the server, no hang', { timeout: 60_000 }, async (t) => {
  if (!skipUnless(t, 'nbdkit')) return;
  const dir = (await tmpDir(t)).path;
  const sock = join(dir, 'd.sock');
  // every read takes 10 s: the kill lands while reads are in flight
  const k = background(t, 'nbdkit', ['-f', '-U', sock, '--filter=delay', 'memory', String(SIZE), 'rdelay=10']);
  await socketReady(sock, k as never);
  const d = await Disk.open(unix(sock), { readOnly: true });
  const started = Date.now();
  const reads = Promise.allSettled([d.read(0, 4096), d.read(MiB, 4096)]);
  await new Promise((r) => setTimeout(r, 300));
  k.kill('SIGKILL');
  const res = await reads;
  assert.ok(Date.now() - started < 8000, `took ${Date.now() - started} ms`);
  for (const r of res) {
    assert.equal(r.status, 'rejected');
    const e = (r as PromiseRejectedResult).reason;
    assert.ok(e instanceof DiskError && e.code === 'FILEIO' && e.message.includes(unix(sock)), String(e));
  }
  await d.close().catch(() => {});
});
