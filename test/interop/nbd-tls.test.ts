/**
 * TLS for `vdkit serve`, as libnbd's interop suite tests servers: X.509 and PSK, each with
 * --tls require and --tls on, through nbdinfo (nbds://), qemu-img (--object tls-creds-*) and
 * nbdcopy; a plaintext client against require is refused; a wrong PSK fails the handshake and
 * the server goes on serving; the CVE-2021-3716 sequences (state negotiated before STARTTLS,
 * plaintext injected after it) are rejected. Certificates are made here with openssl.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Cmd, Info, Opt, Rep, ReplyType, SIMPLE_REPLY_MAGIC } from '../../src/nbd/protocol/constants.js';
import { encodeInfoRequest, encodeMetaContextRequest, encodeOption } from '../../src/nbd/protocol/codec.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';
import { RawClient } from '../helpers/nbd-raw.js';
import { makeFixture, ok, startServer, type Fixture } from './nbd-support.js';
import type { NbdServer } from '../../src/nbd/server/server.js';

interface Creds {
  serverDir: string;
  clientDir: string;
  pskDir: string;
  pskFile: string;
  wrongPskFile: string;
}

async function makeCreds(dir: string): Promise<Creds> {
  const s = join(dir, 'server');
  const c = join(dir, 'client');
  const p = join(dir, 'psk');
  await Promise.all([mkdir(s), mkdir(c), mkdir(p)]);
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
  await writeFile(join(p, 'keys.psk'), `alice:${key}\n`);
  await writeFile(join(dir, 'wrong.psk'), `alice:${'0'.repeat(64)}\n`);
  return { serverDir: s, clientDir: c, pskDir: p, pskFile: join(p, 'keys.psk'), wrongPskFile: join(dir, 'wrong.psk') };
}

let shared: Promise<{ creds: Creds; fx: Fixture }> | undefined;
/** one set of credentials and one image for the whole file */
function setup(t: TestContext) {
  shared ??= (async () => {
    const dir = (await tmpDir(undefined, 'vdkit-nbd-tls-')).path;
    process.on('exit', () => void run('rm', ['-rf', dir]));
    const [creds, fx] = await Promise.all([makeCreds(dir), makeFixture(dir, 'qcow2')]);
    return { creds, fx };
  })();
  void t;
  return shared;
}

function port(s: NbdServer): number {
  return (s.address as { port: number }).port;
}

for (const kind of ['x509', 'psk'] as const) {
  for (const mode of ['require', 'on'] as const) {
    test(`TLS ${kind} --tls ${mode}: nbdinfo, qemu-img and nbdcopy over TLS; plaintext ${mode === 'require' ? 'refused' : 'still served'}`, async (t) => {
      if (!skipUnless(t, 'openssl', 'nbdinfo', 'nbdcopy', 'qemu-img', 'qemu-io')) return;
      const { creds, fx } = await setup(t);
      const out = (await tmpDir(t)).path;
      const server = await startServer(t, {
        images: [{ path: fx.path, name: 'disk' }],
        listen: { host: '127.0.0.1', port: 0 },
        readOnly: true,
        tls: kind === 'x509' ? { mode, x509Dir: creds.serverDir } : { mode, pskFile: creds.pskFile },
      });
      const P = port(server);
      const libnbdUri = kind === 'x509' ? `nbds://127.0.0.1:${P}/disk?tls-certificates=${creds.clientDir}` : `nbds://alice@127.0.0.1:${P}/disk?tls-psk-file=${creds.pskFile}`;
      const object = kind === 'x509' ? `tls-creds-x509,id=tls0,endpoint=client,dir=${creds.clientDir}` : `tls-creds-psk,id=tls0,endpoint=client,dir=${creds.pskDir},username=alice`;
      const model = await readFile(fx.model);
      await Promise.all([
        (async () => {
          const r = await ok('nbdinfo', [libnbdUri]);
          assert.match(r.stdout, /with TLS/);
        })(),
        (async () => {
          const o = join(out, 'qemu.raw');
          await ok('qemu-img', ['convert', '--object', object, '--image-opts', `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${P},export=disk,tls-creds=tls0`, '-O', 'raw', o]);
          assert.ok((await readFile(o)).equals(model), 'qemu-img convert over TLS');
        })(),
        (async () => {
          const o = join(out, 'copy.raw');
          await ok('nbdcopy', ['--connections=4', libnbdUri, o]);
          assert.ok((await readFile(o)).equals(model), 'nbdcopy over TLS');
        })(),
        (async () => {
          const plain = await run('nbdinfo', [`nbd://127.0.0.1:${P}/disk`]);
          if (mode === 'require') assert.notEqual(plain.code, 0, 'a plaintext client is refused');
          else assert.match(plain.stdout, /without TLS/);
        })(),
        (async () => {
          // qemu-img without TLS against require: refused as well
          const plain = await run('qemu-img', ['info', `nbd://127.0.0.1:${P}/disk`]);
          assert.equal(plain.code === 0, mode === 'on', plain.stderr);
        })(),
      ]);
    });
  }
}

test('TLS PSK: a wrong key fails the handshake, and the server keeps serving the right one', async (t) => {
  if (!skipUnless(t, 'openssl', 'nbdinfo')) return;
  const { creds, fx } = await setup(t);
  const server = await startServer(t, { images: [{ path: fx.path, name: 'disk' }], listen: { host: '127.0.0.1', port: 0 }, readOnly: true, tls: { mode: 'require', pskFile: creds.pskFile } });
  const P = port(server);
  const wrong = await run('nbdinfo', [`nbds://alice@127.0.0.1:${P}/disk?tls-psk-file=${creds.wrongPskFile}`]);
  assert.notEqual(wrong.code, 0, 'wrong PSK');
  const unknownUser = await run('nbdinfo', [`nbds://mallory@127.0.0.1:${P}/disk?tls-psk-file=${creds.wrongPskFile.replace('wrong.psk', 'psk/keys.psk')}`]);
  assert.notEqual(unknownUser.code, 0, 'unknown identity');
  await ok('nbdinfo', [`nbds://alice@127.0.0.1:${P}/disk?tls-psk-file=${creds.pskFile}`]);
});

test('CVE-2021-3716: structured replies and meta contexts negotiated before STARTTLS are forgotten; plaintext after STARTTLS ends the connection', async (t) => {
  if (!skipUnless(t, 'openssl')) return;
  const { creds, fx } = await setup(t);
  const server = await startServer(t, { images: [{ path: fx.path, name: 'disk' }], listen: { host: '127.0.0.1', port: 0 }, readOnly: true, tls: { mode: 'on', pskFile: creds.pskFile } });
  const address = server.address as { host: string; port: number };
  const key = Buffer.from((await readFile(creds.pskFile, 'utf8')).trim().split(':')[1]!, 'hex');
  const tlsOpts = { pskCallback: () => ({ identity: 'alice', psk: key }), checkServerIdentity: () => undefined, ciphers: 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256' };

  // the injected options, as a man in the middle would put them before the client's STARTTLS
  const c = await RawClient.connect(address);
  t.after(() => c.close());
  await c.start();
  assert.equal((await c.option(Opt.STRUCTURED_REPLY))[0]!.type, Rep.ACK);
  assert.equal((await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('disk', ['base:allocation']))).at(-1)!.type, Rep.ACK);
  assert.equal((await c.option(Opt.STARTTLS))[0]!.type, Rep.ACK);
  await c.upgrade(tlsOpts);
  assert.equal((await c.option(Opt.GO, encodeInfoRequest('disk', [Info.BLOCK_SIZE]))).at(-1)!.type, Rep.ACK);
  c.request({ type: Cmd.READ, cookie: 11n, length: 512n });
  const r = await c.readReply(512);
  assert.equal(r.magic, SIMPLE_REPLY_MAGIC, 'a simple reply: structured replies were not carried over');
  c.request({ type: Cmd.BLOCK_STATUS, cookie: 12n, length: 512n });
  assert.equal((await c.readReply()).error, 22, 'block status refused: the meta context was not carried over');

  // under TLS the client may negotiate them itself, and then they apply
  const d = await RawClient.connect(address);
  t.after(() => d.close());
  await d.start();
  await d.option(Opt.STARTTLS);
  await d.upgrade(tlsOpts);
  await d.option(Opt.STRUCTURED_REPLY);
  await d.go('disk');
  d.request({ type: Cmd.READ, cookie: 13n, length: 512n });
  assert.equal((await d.readReply()).type, ReplyType.OFFSET_DATA);

  // plaintext pipelined right behind STARTTLS (injection) never reaches TLS or the option parser
  const e = await RawClient.connect(address);
  t.after(() => e.close());
  await e.start();
  e.send(Buffer.concat([encodeOption(Opt.STARTTLS), encodeOption(Opt.STRUCTURED_REPLY)]));
  assert.equal((await e.readOptionReply()).type, Rep.ACK);
  assert.ok(await e.closedWithin(2000), 'the server hangs up');
});
