/**
 * The NBD client against scripted servers: URIs parse as the NBD URI spec says, and a server
 * that sends bad bytes (wrong magic, an oversized option reply, a chunk outside the request, an
 * oversized error message, a reply to no request), drops the connection mid-read or never
 * finishes the handshake gets a DiskError naming the field or the server, never a crash, a hang
 * or an allocation sized by what it sent.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { DiskError } from '../../src/core/errors.js';
import { Cmd, Opt, Rep, ReplyType, SIMPLE_REPLY_MAGIC, TFlag } from '../../src/nbd/protocol/constants.js';
import { decodeRequest, encodeChunkHeader, encodeGreeting, encodeInfoBlockSize, encodeInfoExport, encodeMetaContext, encodeOptionReply, encodeSimpleReply } from '../../src/nbd/protocol/codec.js';
import { OptionHeader, Request } from '../../src/nbd/protocol/structs.js';
import { ByteReader } from '../../src/nbd/protocol/reader.js';
import { NbdStore } from '../../src/nbd/client/store.js';
import { parseNbdUri } from '../../src/nbd/client/uri.js';
import { locate } from '../../src/storage/locations.js';

test('NBD URIs: TCP, Unix, TLS forms, export names, and credentials left out of the display form', () => {
  const a = parseNbdUri('nbd://example.com/disk');
  assert.deepEqual([a.host, a.port, a.exportName, a.tls, a.display], ['example.com', 10809, 'disk', false, 'nbd://example.com/disk']);
  assert.equal(parseNbdUri('nbd://h').exportName, '');
  assert.equal(parseNbdUri('nbd://h/').exportName, '');
  assert.equal(parseNbdUri('nbd://h//abs/name').exportName, '/abs/name');
  assert.equal(parseNbdUri('nbd://h/a%20b').exportName, 'a b');
  const six = parseNbdUri('nbd://[::1]:1234/x');
  assert.deepEqual([six.host, six.port], ['::1', 1234]);
  const u = parseNbdUri('nbd+unix:///e?socket=/tmp/s.sock');
  assert.deepEqual([u.socket, u.exportName, u.host, u.display], ['/tmp/s.sock', 'e', undefined, 'nbd+unix:///e?socket=/tmp/s.sock']);
  const t = parseNbdUri('nbds://alice@h:99/e?tls-psk-file=/keys.psk');
  assert.deepEqual([t.tls, t.tlsUsername, t.tlsPskFile, t.display], [true, 'alice', '/keys.psk', 'nbds://h:99/e']);
  const x = parseNbdUri('nbds+unix:///e?socket=/s&tls-certificates=/certs&tls-verify-peer=false');
  assert.deepEqual([x.tlsCertificates, x.tlsVerifyPeer, x.display], ['/certs', false, 'nbds+unix:///e?socket=/s']);
  const refuse = (uri: string, field: string) =>
    assert.throws(
      () => parseNbdUri(uri),
      (e: unknown) => e instanceof DiskError && e.code === 'INVAL' && e.details.field === field,
      uri,
    );
  refuse('nbd+unix:///e', 'socket');
  refuse('nbd+unix://host/e?socket=/s', 'host');
  refuse('nbd://h/e?socket=/s', 'socket');
  refuse('nbd://h/e?tls-psk-file=/k', 'tls-psk-file');
  refuse('nbd://h/e?bogus=1', 'bogus');
  refuse('nbds://h/e?tls-verify-peer=maybe', 'tls-verify-peer');
  refuse('nbd://u:secret@h/e', 'password');
});

test('a URL names its own namespace (raw by default); a path does not', async () => {
  assert.equal(await locate('disk.vmdk'), undefined);
  assert.equal(await locate('nbd.vmdk'), undefined);
  const loc = await locate('nbd+unix:///x?socket=/nowhere');
  assert.equal(loc?.name, 'nbd+unix:///x?socket=/nowhere');
  assert.equal(loc?.defaultFormat, 'raw');
  assert.equal(loc?.namespace.resolve(loc.name, 'base.qcow2'), 'nbd+unix:///base.qcow2?socket=/nowhere');
  await assert.rejects(loc!.namespace.create(loc!.name), (e: unknown) => e instanceof DiskError && e.code === 'NOTSUPPORTED');
});

interface Script {
  /** replace the greeting */
  greeting?: Buffer;
  /** answer GO with these bytes instead of a proper reply */
  goReply?: Buffer;
  size?: number;
  flags?: number;
  blockSize?: [number, number, number];
  /** answer each request; return bytes to send (or 'close' to drop the connection, or undefined to stay silent) */
  onRequest?: (r: { type: number; cookie: bigint; offset: bigint; length: bigint }, sock: net.Socket) => Buffer | 'close' | undefined;
  /** no handshake at all: accept and say nothing */
  silent?: boolean;
  structured?: boolean;
}

/** a server on a Unix socket that plays `s`; returns the URI */
async function scripted(t: TestContext, s: Script): Promise<string> {
  const path = `/tmp/vdkit-nbdc-${process.pid}-${Math.random().toString(36).slice(2)}.sock`;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('error', () => {});
    if (s.silent) return;
    void (async () => {
      const r = new ByteReader(sock, 1 << 20, 'client');
      sock.write(s.greeting ?? encodeGreeting());
      await r.read(4);
      for (;;) {
        const h = OptionHeader.decode(await r.read(OptionHeader.size));
        const data = await r.read(h.length);
        void data;
        if (h.option === Opt.STRUCTURED_REPLY) sock.write(encodeOptionReply(h.option, s.structured === false ? Rep.ERR_UNSUP : Rep.ACK));
        else if (h.option === Opt.SET_META_CONTEXT) sock.write(Buffer.concat([encodeOptionReply(h.option, Rep.META_CONTEXT, encodeMetaContext(7, 'base:allocation')), encodeOptionReply(h.option, Rep.ACK)]));
        else if (h.option === Opt.GO) {
          if (s.goReply) sock.write(s.goReply);
          else {
            const parts = [encodeOptionReply(h.option, Rep.INFO, encodeInfoExport(s.size ?? 1 << 20, s.flags ?? TFlag.HAS_FLAGS | TFlag.SEND_FLUSH))];
            if (s.blockSize) parts.push(encodeOptionReply(h.option, Rep.INFO, encodeInfoBlockSize(...s.blockSize)));
            parts.push(encodeOptionReply(h.option, Rep.ACK));
            sock.write(Buffer.concat(parts));
            break;
          }
        } else sock.write(encodeOptionReply(h.option, Rep.ERR_UNSUP));
      }
      for (;;) {
        const req = decodeRequest(await r.read(Request.size), false);
        if (req.type === Cmd.WRITE) await r.read(Number(req.length));
        if (req.type === Cmd.DISC) return sock.end();
        const out = s.onRequest?.(req, sock);
        if (out === 'close') return sock.destroy();
        if (out) sock.write(out);
      }
    })().catch(() => sock.destroy());
  });
  await new Promise<void>((res) => server.listen(path, res));
  t.after(() => {
    for (const x of sockets) x.destroy();
    server.close();
  });
  return `nbd+unix:///?socket=${path}`;
}

const fails = (field: string, code = 'FILEIO') => (e: unknown) => {
  assert.ok(e instanceof DiskError, `not a DiskError: ${String(e)}`);
  assert.equal(e.code, code, e.message);
  assert.equal(e.details.field, field, e.message);
  return true;
};

test('bad handshakes: wrong greeting magic, an oversized option reply, bad block sizes, a silent server', async (t) => {
  const bad = Buffer.from(encodeGreeting());
  bad.write('NBDMAGIX', 0, 'latin1');
  await assert.rejects(NbdStore.open(parseNbdUri(await scripted(t, { greeting: bad })), undefined), (e: unknown) => e instanceof DiskError && e.details.struct === 'NbdGreeting' && e.details.field === 'passwd');
  // a reply that claims 4 GiB of data: refused from the header, nothing read or allocated by it
  const huge = encodeOptionReply(Opt.GO, Rep.INFO);
  huge.writeUInt32BE(0xffffffff, 16);
  await assert.rejects(NbdStore.open(parseNbdUri(await scripted(t, { goReply: huge })), undefined), fails('length'));
  await assert.rejects(NbdStore.open(parseNbdUri(await scripted(t, { blockSize: [3, 4096, 1 << 20] })), undefined), fails('minimum'));
  await assert.rejects(NbdStore.open(parseNbdUri(await scripted(t, { blockSize: [512, 4096, 1000] })), undefined), fails('maximum'));
  const start = Date.now();
  await assert.rejects(NbdStore.open(parseNbdUri(await scripted(t, { silent: true })), undefined, { handshakeTimeoutMs: 300 }), fails('handshakeTimeoutMs'));
  assert.ok(Date.now() - start < 5000);
});

test('bad replies: chunk offset outside the request, oversized error message, unknown cookie, bad simple-reply magic', async (t) => {
  const chunk = (cookie: bigint, type: number, payload: Buffer, done = true) => Buffer.concat([encodeChunkHeader({ mode: 'structured', cookie, offset: 0n }, type, payload.length, done), payload]);
  const outside = await scripted(t, {
    onRequest: (r) => {
      const p = Buffer.alloc(8 + 16);
      p.writeBigUInt64BE(r.offset + r.length, 0); // just past the request
      return chunk(r.cookie, ReplyType.OFFSET_DATA, p);
    },
  });
  let st = await NbdStore.open(parseNbdUri(outside), undefined);
  await assert.rejects(st.read(0, 4096), fails('offset'));
  await st.close();

  const bigError = await scripted(t, {
    onRequest: (r) => {
      const p = Buffer.alloc(6 + 10);
      p.writeUInt32BE(5, 0);
      p.writeUInt16BE(60000, 4); // message length past the chunk
      return chunk(r.cookie, ReplyType.ERROR, p);
    },
  });
  st = await NbdStore.open(parseNbdUri(bigError), undefined);
  await assert.rejects(st.read(0, 512), fails('messageLength'));
  await st.close();

  const hugeChunk = await scripted(t, {
    onRequest: (r) => {
      const head = encodeChunkHeader({ mode: 'structured', cookie: r.cookie, offset: 0n }, ReplyType.ERROR, 0xfffffff0, true);
      return head;
    },
  });
  st = await NbdStore.open(parseNbdUri(hugeChunk), undefined);
  await assert.rejects(st.read(0, 512), fails('length'));
  await st.close();

  const stranger = await scripted(t, { onRequest: (r) => encodeSimpleReply(0, r.cookie + 1000n) });
  st = await NbdStore.open(parseNbdUri(stranger), undefined, { write: true });
  await assert.rejects(st.flush(), fails('cookie'));
  await st.close();

  const magic = await scripted(t, {
    onRequest: (r) => {
      const b = encodeSimpleReply(0, r.cookie);
      b.writeUInt32BE(SIMPLE_REPLY_MAGIC ^ 1, 0);
      return b;
    },
  });
  st = await NbdStore.open(parseNbdUri(magic), undefined);
  await assert.rejects(st.read(0, 512), fails('magic'));
  // the store stays failed: no reconnect behind the caller's back
  await assert.rejects(st.read(0, 512), fails('magic'));
  await st.close();
});

test('a dropped connection fails every request in flight with an error naming the server; a write is not reported done', async (t) => {
  let seen = 0;
  const uri = await scripted(t, {
    flags: TFlag.HAS_FLAGS | TFlag.SEND_FLUSH,
    onRequest: () => (++seen === 3 ? 'close' : undefined), // answer nothing, then hang up
  });
  const st = await NbdStore.open(parseNbdUri(uri), undefined, { write: true });
  const results = await Promise.allSettled([st.read(0, 4096), st.write(4096, Buffer.alloc(4096, 1)), st.read(8192, 4096)]);
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    const e = (r as PromiseRejectedResult).reason as DiskError;
    assert.ok(e instanceof DiskError && e.code === 'FILEIO', String(e));
    assert.ok(e.message.includes(uri), e.message);
  }
  await st.close();
});

test('reads and writes are split at the maximum payload and widened to the minimum block', async (t) => {
  const seen: { type: number; offset: number; length: number }[] = [];
  const data = Buffer.alloc(1 << 20);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  const uri = await scripted(t, {
    blockSize: [512, 4096, 64 * 1024],
    flags: TFlag.HAS_FLAGS | TFlag.SEND_FLUSH,
    onRequest: (r) => {
      seen.push({ type: r.type, offset: Number(r.offset), length: Number(r.length) });
      const payload = Buffer.alloc(8 + Number(r.length));
      payload.writeBigUInt64BE(r.offset, 0);
      data.copy(payload, 8, Number(r.offset), Number(r.offset + r.length));
      return Buffer.concat([encodeChunkHeader({ mode: 'structured', cookie: r.cookie, offset: 0n }, ReplyType.OFFSET_DATA, payload.length, true), payload]);
    },
  });
  const st = await NbdStore.open(parseNbdUri(uri), undefined);
  const got = await st.read(1000, 200_000);
  assert.ok(got.equals(data.subarray(1000, 201_000)));
  assert.ok(seen.every((s) => s.length <= 64 * 1024 && s.offset % 512 === 0 && s.length % 512 === 0), JSON.stringify(seen));
  assert.equal(Math.min(...seen.map((s) => s.offset)), 512);
  await st.close();
});
