/**
 * VixDiskLib's nbd and nbdssl transports (issue 18 item 5): one ported VDDK backup program and
 * one restore program, written as against VDDK, run unchanged but for their connection
 * parameters against `vdkit serve`, qemu-nbd and nbdkit (memory, file): open, GetInfo,
 * GetTransportMode, every sector read and compared with the source as qemu-img reads it,
 * sectors written and read back by qemu-img/qemu-io. nbdssl against `vdkit serve --tls require`
 * with test-made certificates: a CA from the config file, a pinned thumbprint, PSK. The
 * transport order, the network VIX errors (refused, no server, no export, handshake, dropped
 * connection) and what a remote connection refuses.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdir, open, readFile, writeFile, copyFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import * as V from '../../src/compat/vixdisklib.js';
import { skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, PLAN_DATA, SIZE, background, makeFixture, ok, startServer, type Fixture } from './nbd-support.js';
import { S, rejectsVix } from './vixdisklib-support.js';

// ---------------------------------------------------------------------------------------------
// The ported VDDK programs: only cnxParams, transportModes and the config file differ per server

interface BackupResult {
  modes: string;
  transport: string;
  info: V.VixDiskLibInfo;
  keys: string[];
  blocks: V.VixDiskLibBlock[];
}

/**
 * A backup: InitEx, ConnectEx read-only, Open, GetInfo, the allocated blocks, then every sector
 * read in 1 MiB pieces into a local raw file (as a full backup reads them).
 */
async function backupProgram(cnxParams: V.VixDiskLibConnectParams, transportModes: string | null, diskPath: string, outFile: string, configFile: string | null = null): Promise<BackupResult> {
  await V.VixDiskLib_InitEx(1, 1, null, null, null, null, configFile);
  try {
    const modes = V.VixDiskLib_ListTransportModes();
    const cnx = await V.VixDiskLib_ConnectEx(cnxParams, true, null, transportModes);
    try {
      const h = await V.VixDiskLib_Open(cnx, diskPath, V.VIXDISKLIB_FLAG_OPEN_READ_ONLY);
      try {
        const info = await V.VixDiskLib_GetInfo(h);
        const transport = V.VixDiskLib_GetTransportMode(h);
        const keys = await V.VixDiskLib_GetMetadataKeys(h);
        const blocks = await V.VixDiskLib_QueryAllocatedBlocks(h, 0, info.capacity, V.VIXDISKLIB_MIN_CHUNK_SIZE);
        const out = await open(outFile, 'w');
        try {
          const step = MiB / S;
          const buf = Buffer.alloc(MiB);
          for (let sector = 0; sector < info.capacity; sector += step) {
            const n = Math.min(step, info.capacity - sector);
            await V.VixDiskLib_Read(h, sector, n, buf);
            await out.write(buf, 0, n * S, sector * S);
          }
        } finally {
          await out.close();
        }
        return { modes, transport, info, keys, blocks };
      } finally {
        await V.VixDiskLib_Close(h);
      }
    } finally {
      await V.VixDiskLib_Disconnect(cnx);
    }
  } finally {
    V.VixDiskLib_Exit();
  }
}

/** A restore: ConnectEx read-write, Open, Write each (sector, count, byte), Flush, Close. */
async function restoreProgram(cnxParams: V.VixDiskLibConnectParams, transportModes: string | null, diskPath: string, writes: [number, number, number][]): Promise<string> {
  await V.VixDiskLib_InitEx(1, 1, null, null, null, null, null);
  try {
    const cnx = await V.VixDiskLib_ConnectEx(cnxParams, false, null, transportModes);
    try {
      const h = await V.VixDiskLib_Open(cnx, diskPath, 0);
      try {
        for (const [sector, count, byte] of writes) await V.VixDiskLib_Write(h, sector, count, Buffer.alloc(count * S, byte));
        await V.VixDiskLib_Flush(h);
        return V.VixDiskLib_GetTransportMode(h);
      } finally {
        await V.VixDiskLib_Close(h);
      }
    } finally {
      await V.VixDiskLib_Disconnect(cnx);
    }
  } finally {
    V.VixDiskLib_Exit();
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** the backup equals the source (qemu-img compare), and its allocated blocks cover the data */
async function checkBackup(r: BackupResult, out: string, fx: Fixture, transport: string, label: string): Promise<void> {
  assert.equal(r.modes, 'file:nbd:nbdssl', `${label}: ListTransportModes`);
  assert.equal(r.transport, transport, `${label}: GetTransportMode`);
  assert.equal(r.info.capacity, SIZE / S, `${label}: capacity in sectors`);
  assert.equal(r.info.numLinks, 1);
  assert.equal(r.info.parentFileNameHint, null);
  assert.deepEqual(r.keys, [], `${label}: an export is raw: no metadata`);
  await ok('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', out, fx.model]);
  for (const [o, l] of PLAN_DATA) {
    const covered = r.blocks.some((b) => b.offset * S <= o && (b.offset + b.length) * S >= o + l);
    assert.ok(covered, `${label}: data at ${o} (+${l}) lies in an allocated block: ${JSON.stringify(r.blocks)}`);
  }
  assert.ok(r.blocks.reduce((n, b) => n + b.length, 0) < SIZE / S, `${label}: QueryAllocatedBlocks skips holes over NBD`);
}

/** a TCP port nothing listens on now */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** wait until something accepts on a TCP port or a Unix socket */
async function listening(where: { port: number } | { path: string }, child?: { exitCode: number | null; stderrText?: string }): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const c = 'port' in where ? net.connect(where.port, '127.0.0.1') : net.connect(where.path);
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (up) return;
    if (child && child.exitCode !== null) throw new Error(`server exited: ${child.stderrText ?? ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens at ${JSON.stringify(where)}`);
}

const tcpPort = (s: { address: unknown }) => (s.address as { port: number }).port;

// ---------------------------------------------------------------------------------------------
// Servers

test('VixDiskLib over nbd against vdkit serve: backup equals the source, a restore read back by qemu-io, Connect falls back from nbdssl to nbd', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-vix-nbd-serve-')).path;
  const fx = await makeFixture(dir, 'qcow2');
  const server = await startServer(t, { images: [{ path: fx.path, name: 'disk' }], listen: { host: '127.0.0.1', port: 0 } });
  const cnxParams: V.VixDiskLibConnectParams = { serverName: '127.0.0.1', port: tcpPort(server) };

  const out = join(dir, 'backup.raw');
  await checkBackup(await backupProgram(cnxParams, 'nbd', 'disk', out), out, fx, 'nbd', 'vdkit serve');
  // no list: VDDK's network default nbdssl:nbd; this server has no TLS, so nbd is what works
  await checkBackup(await backupProgram(cnxParams, null, 'disk', out), out, fx, 'nbd', 'vdkit serve, default transports');
  await rejectsVix(backupProgram(cnxParams, 'nbd', 'no-such-disk', out), 'VIX_E_DISK_FILENOTFOUND', 'no such export');

  assert.equal(await restoreProgram(cnxParams, 'nbdssl:nbd', 'disk', [[100, 8, 0x7e], [SIZE / S - 1, 1, 0x11]]), 'nbd');
  await server.close();
  await ok('qemu-io', ['-f', 'qcow2', '-r', '-c', `read -P 0x7e ${100 * S} ${8 * S}`, '-c', `read -P 0x11 ${SIZE - S} ${S}`, '-c', `read -P 0x61 0 ${100 * S}`, fx.path]);
  await ok('qemu-img', ['check', '-q', fx.path]);
});

test('VixDiskLib over nbd against qemu-nbd (TCP): backup equals the source, writes read back by qemu-io, a read-only connection refuses writes', async (t) => {
  if (!skipUnless(t, 'qemu-nbd', 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-vix-nbd-qemu-')).path;
  const fx = await makeFixture(dir, 'qcow2');
  const port = await freePort();
  const q = background(t, 'qemu-nbd', ['-b', '127.0.0.1', '-p', String(port), '-x', 'vm-disk', '-f', 'qcow2', '-e', '4', '-t', fx.path]);
  await listening({ port }, q as never);
  const cnxParams: V.VixDiskLibConnectParams = { serverName: '127.0.0.1', port };

  const out = join(dir, 'backup.raw');
  await checkBackup(await backupProgram(cnxParams, 'nbd', 'vm-disk', out), out, fx, 'nbd', 'qemu-nbd');
  assert.equal(await restoreProgram(cnxParams, 'nbd', 'vm-disk', [[2048 + 3, 5, 0xa5]]), 'nbd');
  const uri = `nbd://127.0.0.1:${port}/vm-disk`;
  await ok('qemu-io', ['-f', 'raw', '-r', '-c', `read -P 0xa5 ${(2048 + 3) * S} ${5 * S}`, '-c', `read -P 0x62 ${MiB} ${3 * S}`, uri]);

  await V.VixDiskLib_Init(1, 0, null, null, null, null);
  try {
    const ro = await V.VixDiskLib_ConnectEx(cnxParams, true, null, 'nbd');
    const h = await V.VixDiskLib_Open(ro, 'vm-disk', 0);
    await rejectsVix(V.VixDiskLib_Write(h, 0, 1, Buffer.alloc(S)), 'VIX_E_DISK_RDONLY', 'Write through a read-only connection');
    await V.VixDiskLib_Close(h);
    await V.VixDiskLib_Disconnect(ro);
  } finally {
    V.VixDiskLib_Exit();
  }
  await ok('qemu-io', ['-f', 'raw', '-r', '-c', `read -P 0x61 0 ${S}`, uri]);
});

test('VixDiskLib over nbd against nbdkit file and memory (Unix socket as serverName): backup equals the source, writes read back by qemu-img', async (t) => {
  if (!skipUnless(t, 'nbdkit', 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-vix-nbd-kit-')).path;
  const fx = await makeFixture(dir, 'qcow2');
  const served = join(dir, 'served.raw');
  await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', fx.model, served]);
  const fileSock = join(dir, 'file.sock');
  const f = background(t, 'nbdkit', ['-f', '-U', fileSock, 'file', served]);
  await listening({ path: fileSock }, f as never);

  const out = join(dir, 'backup.raw');
  await checkBackup(await backupProgram({ serverName: fileSock }, 'nbd', '', out), out, fx, 'nbd', 'nbdkit file');
  assert.equal(await restoreProgram({ serverName: fileSock }, 'nbd', '', [[10, 2, 0x3c]]), 'nbd');
  await ok('qemu-io', ['-f', 'raw', '-r', '-c', `read -P 0x3c ${10 * S} ${2 * S}`, '-c', `read -P 0x61 0 ${10 * S}`, served]);

  const memSock = join(dir, 'mem.sock');
  const m = background(t, 'nbdkit', ['-f', '-U', memSock, 'memory', String(SIZE)]);
  await listening({ path: memSock }, m as never);
  assert.equal(await restoreProgram({ serverName: memSock }, null, '', [[0, 1, 0x55], [4096, 16, 0x66]]), 'nbd');
  await ok('qemu-io', ['-f', 'raw', '-r', '-c', `read -P 0x55 0 ${S}`, '-c', `read -P 0x66 ${4096 * S} ${16 * S}`, '-c', `read -P 0 ${S} ${S}`, `nbd+unix:///?socket=${memSock}`]);
});

// ---------------------------------------------------------------------------------------------
// nbdssl

interface Creds {
  /** CA-signed server certificate for localhost/127.0.0.1, and the CA (client certificates required) */
  serverDir: string;
  /** ca-cert.pem, client-cert.pem, client-key.pem */
  clientDir: string;
  /** a self-signed server certificate and its key, as an ESX host has */
  selfSignedDir: string;
  pskFile: string;
}

async function makeCreds(dir: string): Promise<Creds> {
  const s = join(dir, 'server');
  const c = join(dir, 'client');
  const e = join(dir, 'esx');
  await Promise.all([mkdir(s), mkdir(c), mkdir(e)]);
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
  await Promise.all([
    sign('server', join(s, 'server-key.pem'), join(s, 'server-cert.pem'), 'localhost'),
    sign('client', join(c, 'client-key.pem'), join(c, 'client-cert.pem'), 'client'),
    ok('openssl', ['req', '-x509', '-new', ...ec, '-keyout', join(e, 'server-key.pem'), '-out', join(e, 'server-cert.pem'), '-days', '2', '-subj', '/CN=esx1.example']),
  ]);
  const key = (await ok('openssl', ['rand', '-hex', '32'])).stdout.trim();
  await writeFile(join(dir, 'keys.psk'), `alice:${key}\n`);
  return { serverDir: s, clientDir: c, selfSignedDir: e, pskFile: join(dir, 'keys.psk') };
}

async function configFile(dir: string, name: string, lines: string[]): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, `${lines.join('\n')}\n`);
  return p;
}

async function startTls(t: TestContext, fx: Fixture, tls: { x509Dir: string } | { pskFile: string }) {
  return startServer(t, { images: [{ path: fx.path, name: 'disk' }], listen: { host: '127.0.0.1', port: 0 }, readOnly: true, tls: { mode: 'require', ...tls } });
}

test('VixDiskLib over nbdssl against vdkit serve --tls require: CA from the config file, a pinned thumbprint (SHA-1 and SHA-256), PSK; transport order; handshake failures', async (t) => {
  if (!skipUnless(t, 'openssl', 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-vix-nbdssl-')).path;
  const [creds, fx] = await Promise.all([makeCreds(dir), makeFixture(dir, 'qcow2')]);
  const out = join(dir, 'backup.raw');

  // X.509, the CA (and this client's certificate) named by the config file; the certificate names localhost
  const ca = await startTls(t, fx, { x509Dir: creds.serverDir });
  const caCfg = await configFile(dir, 'ca.conf', [`vdkit.nbd.tlsCertificates = "${creds.clientDir}"`]);
  const viaCa: V.VixDiskLibConnectParams = { serverName: 'localhost', port: tcpPort(ca) };
  await checkBackup(await backupProgram(viaCa, 'nbdssl', 'disk', out, caCfg), out, fx, 'nbdssl', 'nbdssl, CA');
  // the first mode that works: plain nbd is refused by a server that requires TLS
  await checkBackup(await backupProgram(viaCa, 'nbd:nbdssl', 'disk', out, caCfg), out, fx, 'nbdssl', 'nbd:nbdssl');
  await rejectsVix(backupProgram(viaCa, 'nbd', 'disk', out, caCfg), 'VIX_E_DISK_FILENOPERMISSION', 'nbd alone against TLS required');
  // without the CA the server's certificate is not trusted (system CAs only)
  const noCa = await rejectsVix(backupProgram(viaCa, 'nbdssl', 'disk', out), 'VIX_E_HOST_NETBLKDEV_HANDSHAKE', 'nbdssl without the CA');
  assert.match(noCa.message, /nbdssl transport to localhost:\d+/);

  // a self-signed certificate (an ESX host's): trusted by its thumbprint only
  const esx = await startTls(t, fx, { x509Dir: creds.selfSignedDir });
  const cert = new X509Certificate(await readFile(join(creds.selfSignedDir, 'server-cert.pem')));
  const pinned: V.VixDiskLibConnectParams = { serverName: '127.0.0.1', port: tcpPort(esx), thumbPrint: cert.fingerprint };
  assert.match(cert.fingerprint, /^([0-9A-F]{2}:){19}[0-9A-F]{2}$/, 'VDDK form: SHA-1 with colons');
  await checkBackup(await backupProgram(pinned, 'nbdssl', 'disk', out), out, fx, 'nbdssl', 'nbdssl, SHA-1 thumbprint');
  await checkBackup(await backupProgram({ ...pinned, thumbPrint: cert.fingerprint256.replace(/:/g, '').toLowerCase() }, 'nbdssl', 'disk', out), out, fx, 'nbdssl', 'nbdssl, SHA-256 thumbprint');
  const wrong = await rejectsVix(backupProgram({ ...pinned, thumbPrint: '00'.repeat(20) }, 'nbdssl', 'disk', out), 'VIX_E_HOST_NETBLKDEV_HANDSHAKE', 'a wrong thumbprint');
  assert.equal(wrong.details.field, 'thumbPrint');
  await rejectsVix(backupProgram({ ...pinned, thumbPrint: 'AB:CD' }, 'nbdssl', 'disk', out), 'VIX_E_DISK_INVAL', 'a thumbprint of no known length');
  await rejectsVix(backupProgram({ ...pinned, thumbPrint: null }, 'nbdssl', 'disk', out), 'VIX_E_HOST_NETBLKDEV_HANDSHAKE', 'self-signed without a thumbprint');

  // PSK: the key file from the config file, the identity from creds.uid.userName
  const psk = await startTls(t, fx, { pskFile: creds.pskFile });
  const pskCfg = await configFile(dir, 'psk.conf', [`vdkit.nbd.tlsPskFile = "${creds.pskFile}"`]);
  const alice: V.VixDiskLibConnectParams = { serverName: '127.0.0.1', port: tcpPort(psk), credType: V.VIXDISKLIB_CRED_UID, creds: { uid: { userName: 'alice', password: 'unused' } } };
  await checkBackup(await backupProgram(alice, 'nbdssl', 'disk', out, pskCfg), out, fx, 'nbdssl', 'nbdssl, PSK');
  await rejectsVix(backupProgram({ ...alice, creds: { uid: { userName: 'bob' } } }, 'nbdssl', 'disk', out, pskCfg), 'VIX_E_DISK_NEEDKEY', 'no key for bob');
});

// ---------------------------------------------------------------------------------------------
// Errors and what a remote connection refuses

test('VixDiskLib network errors: refused, no server, no export, dropped connection (naming the server); remote connections refuse file calls', async (t) => {
  if (!skipUnless(t, 'nbdkit')) return;
  const dir = (await tmpDir(t, 'vdkit-vix-nbd-err-')).path;
  await V.VixDiskLib_Init(1, 0, null, null, null, null);
  try {
    assert.equal(V.VixDiskLib_ListTransportModes(), 'file:nbd:nbdssl');
    const port = await freePort();
    const refused = await V.VixDiskLib_ConnectEx({ serverName: '127.0.0.1', port }, false, null, 'nbdssl:nbd');
    assert.deepEqual(refused, { local: false, vmxSpec: null, serverName: '127.0.0.1' });
    const e = await rejectsVix(V.VixDiskLib_Open(refused, 'disk', 0), 'VIX_E_HOST_NETWORK_CONN_REFUSED', 'nothing listens');
    assert.equal(e.vixError, 14009, "vix.h's number");
    assert.match(e.message, new RegExp(`nbd transport to 127\\.0\\.0\\.1:${port}`));
    // what works on local files does not on NBD exports, unless the list has file
    await rejectsVix(V.VixDiskLib_Create(refused, join(dir, 'x.vmdk'), { diskType: V.VIXDISKLIB_DISK_MONOLITHIC_SPARSE, adapterType: V.VIXDISKLIB_ADAPTER_IDE, hwVersion: 4, capacity: 2048 }), 'VIX_E_DISK_NOTSUPPORTED', 'Create over NBD');
    await V.VixDiskLib_Disconnect(refused);
    await rejectsVix(V.VixDiskLib_ConnectEx({ serverName: '127.0.0.1', port }, false, null, 'nbd:tape'), 'VIX_E_DISK_INVAL', 'an unknown mode');
    await rejectsVix(V.VixDiskLib_ConnectEx(null, false, null, 'nbd'), 'VIX_E_DISK_NOTSUPPORTED', 'nbd without a server');
    // san/hotadd are accepted (VDDK: ConnectEx does not fail) and Open finds nothing to use
    const san = await V.VixDiskLib_ConnectEx({ serverName: '127.0.0.1', port }, true, null, 'san:hotadd');
    await rejectsVix(V.VixDiskLib_Open(san, 'disk', 0), 'VIX_E_DISK_NOTSUPPORTED', 'san only');
    await V.VixDiskLib_Disconnect(san);
    // file then nbd: a local image opens by file, and its mode says so
    const local = join(dir, 'local.vmdk');
    const lc = await V.VixDiskLib_Connect(null);
    await V.VixDiskLib_Create(lc, local, { diskType: V.VIXDISKLIB_DISK_MONOLITHIC_SPARSE, adapterType: V.VIXDISKLIB_ADAPTER_IDE, hwVersion: 4, capacity: 2048 });
    await V.VixDiskLib_Disconnect(lc);
    const mixed = await V.VixDiskLib_ConnectEx({ serverName: '127.0.0.1', port }, false, null, 'file:nbd');
    const lh = await V.VixDiskLib_Open(mixed, local, 0);
    assert.equal(V.VixDiskLib_GetTransportMode(lh), 'file');
    await V.VixDiskLib_Close(lh);
    await V.VixDiskLib_Disconnect(mixed);

    const gone = await V.VixDiskLib_ConnectEx({ serverName: join(dir, 'no.sock') }, false, null, 'nbd');
    await rejectsVix(V.VixDiskLib_Open(gone, '', 0), 'VIX_E_HOST_SERVER_NOT_FOUND', 'no socket at the path');
    await V.VixDiskLib_Disconnect(gone);

    const sock = join(dir, 'm.sock');
    const k = background(t, 'nbdkit', ['-f', '-U', sock, 'memory', String(SIZE)]);
    await listening({ path: sock }, k as never);
    const cnx = await V.VixDiskLib_ConnectEx({ serverName: sock }, false, null, 'nbd');
    const h = await V.VixDiskLib_Open(cnx, 'vm-disk', 0);
    await V.VixDiskLib_Write(h, 0, 1, Buffer.alloc(S, 0x42));
    const buf = Buffer.alloc(S);
    await V.VixDiskLib_Read(h, 0, 1, buf);
    assert.ok(buf.every((b) => b === 0x42));
    // the server goes away under an open disk: the next call says so, naming the server
    k.kill('SIGKILL');
    await new Promise((r) => k.once('exit', r));
    const lost = await rejectsVix(V.VixDiskLib_Read(h, 0, 1, buf), 'VIX_E_HOST_TCP_CONN_LOST', 'Read after the server died');
    assert.ok(lost.message.includes(sock), lost.message);
    await rejectsVix(V.VixDiskLib_Write(h, 8, 1, buf), 'VIX_E_HOST_TCP_CONN_LOST', 'Write after the server died');
    await V.VixDiskLib_Close(h).catch(() => {});
    await V.VixDiskLib_Disconnect(cnx);
  } finally {
    V.VixDiskLib_Exit();
  }
});
