/**
 * The NBD server's handshake, limits and transmission rules, driven by a raw client
 * (test/helpers/nbd-raw.ts) over a Unix socket against in-memory exports: the cases real
 * clients never produce (lying lengths, oversized payloads, pipelining without reading,
 * extended headers) and the ones the issue names (EPERM, EINVAL/EOVERFLOW keeping the
 * connection, names outside --dir).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Cmd, CmdFlag, FLAG_C_FIXED_NEWSTYLE, Info, NbdErr, Opt, Rep, ReplyType, TFlag, EXTENDED_REPLY_MAGIC } from '../../src/nbd/protocol/constants.js';
import { encodeInfoRequest, encodeMetaContextRequest, encodeOption } from '../../src/nbd/protocol/codec.js';
import { serve, type ServeOptions } from '../../src/nbd/server/server.js';
import { ExportTable, safeJoin } from '../../src/nbd/server/exports.js';
import { RawClient, memoryBackend, memoryExport } from '../helpers/nbd-raw.js';
import { tmpDir } from '../helpers/tools.js';
import type { TestContext } from 'node:test';

const MiB = 1024 * 1024;

async function start(t: TestContext, opts: Partial<ServeOptions> & { backend?: ReturnType<typeof memoryBackend> } = {}) {
  const dir = (await tmpDir(t)).path;
  const backend = opts.backend ?? memoryBackend(8 * MiB);
  const server = await serve({ exports: [memoryExport('', backend, 'the memory disk')], listen: { socket: join(dir, 's.sock') }, ...opts });
  t.after(() => server.close());
  const connect = async () => {
    const c = await RawClient.connect(server.address as { socket: string });
    t.after(() => c.close());
    return c;
  };
  return { server, backend, connect, dir };
}

/** connect, negotiate structured replies (optionally) and GO */
async function ready(connect: () => Promise<RawClient>, structured = true, meta: string[] = []) {
  const c = await connect();
  await c.start();
  if (structured) assert.equal((await c.option(Opt.STRUCTURED_REPLY))[0]!.type, Rep.ACK);
  if (meta.length) await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('', meta));
  const r = await c.go('', [Info.BLOCK_SIZE]);
  assert.equal(r.at(-1)!.type, Rep.ACK);
  const flags = r.find((x) => x.data.readUInt16BE(0) === Info.EXPORT)!.data.readUInt16BE(10);
  return { c, flags };
}

test('handshake: LIST with descriptions, unknown option and export, repeated STRUCTURED_REPLY, SET_META_CONTEXT before it', async (t) => {
  const { connect } = await start(t);
  const c = await connect();
  assert.equal(await c.start(), 3, 'fixed newstyle and no-zeroes offered');
  const list = await c.option(Opt.LIST);
  assert.deepEqual(list.map((r) => r.type), [Rep.SERVER, Rep.ACK]);
  assert.equal(list[0]!.data.subarray(4).toString(), 'the memory disk');
  assert.equal((await c.option(99))[0]!.type, Rep.ERR_UNSUP);
  assert.equal((await c.option(Opt.LIST, Buffer.from('x')))[0]!.type, Rep.ERR_INVALID);
  assert.equal((await c.option(Opt.INFO, encodeInfoRequest('nope')))[0]!.type, Rep.ERR_UNKNOWN);
  assert.equal((await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('', ['base:allocation'])))[0]!.type, Rep.ERR_INVALID);
  assert.equal((await c.option(Opt.STRUCTURED_REPLY))[0]!.type, Rep.ACK);
  assert.equal((await c.option(Opt.STRUCTURED_REPLY))[0]!.type, Rep.ERR_INVALID);
  const lm = await c.option(Opt.LIST_META_CONTEXT, encodeMetaContextRequest('', []));
  assert.deepEqual(lm.filter((r) => r.type === Rep.META_CONTEXT).map((r) => r.data.subarray(4).toString()), ['base:allocation', 'qemu:allocation-depth']);
  const sm = await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('', ['base:allocation', 'other:thing', 'qemu:allocation-depth']));
  assert.deepEqual(sm.map((r) => r.type), [Rep.META_CONTEXT, Rep.META_CONTEXT, Rep.ACK]);
  assert.equal((await c.option(Opt.STARTTLS))[0]!.type, Rep.ERR_POLICY, 'no TLS configured');
  assert.equal((await c.option(Opt.EXTENDED_HEADERS))[0]!.type, Rep.ERR_UNSUP, 'extended headers are off by default');
  const info = await c.option(Opt.INFO, encodeInfoRequest('', [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE]));
  assert.deepEqual(info.map((r) => r.data.length ? r.data.readUInt16BE(0) : -1), [Info.EXPORT, Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE, -1]);
  assert.equal((await c.option(Opt.ABORT))[0]!.type, Rep.ACK);
  assert.ok(await c.closedWithin(2000));
});

test('limits: 4097-byte names answered INVALID (connection kept); oversized option data, too many options, bad magic and a slow handshake end the connection', async (t) => {
  const { connect } = await start(t, { limits: { handshakeMs: 300, maxOptions: 8 } });
  const c = await connect();
  await c.start();
  assert.equal((await c.option(Opt.GO, encodeInfoRequest('a'.repeat(4097))))[0]!.type, Rep.ERR_INVALID);
  assert.equal((await c.option(Opt.GO, encodeInfoRequest('a'.repeat(4096))))[0]!.type, Rep.ERR_UNKNOWN);
  const big = await connect();
  await big.start();
  big.send(Buffer.concat([encodeOption(Opt.LIST).subarray(0, 12), Buffer.from([0x7f, 0xff, 0xff, 0xff])]));
  assert.ok(await big.closedWithin(2000), 'option data of 2 GiB: hang up');
  const many = await connect();
  await many.start();
  for (let i = 0; i < 8; i++) assert.equal((await many.option(99))[0]!.type, Rep.ERR_UNSUP);
  many.send(encodeOption(99));
  assert.ok(await many.closedWithin(2000), 'ninth option: hang up');
  const magic = await connect();
  await magic.start();
  magic.send(Buffer.alloc(16, 0x41));
  assert.ok(await magic.closedWithin(2000));
  const slow = await connect();
  await slow.start();
  assert.ok(await slow.closedWithin(3000), 'no GO within the handshake time');
  const flags = await connect();
  await flags.reader.read(18);
  flags.send(Buffer.from([0, 0, 0, 0x80]));
  assert.ok(await flags.closedWithin(2000), 'unknown client flag');
});

test('a client without fixed newstyle gets EXPORT_NAME with the 124 zero bytes', async (t) => {
  const { connect, backend } = await start(t);
  const c = await connect();
  await c.start(0);
  c.send(encodeOption(Opt.EXPORT_NAME, Buffer.alloc(0)));
  const r = await c.reader.read(134);
  assert.equal(Number(r.readBigUInt64BE(0)), backend.size);
  assert.ok(r.subarray(10).every((b) => b === 0));
  c.request({ type: Cmd.READ, length: 512n });
  assert.equal((await c.readReply(512)).error, 0);
});

test('transmission: errors keep the connection (range, size, unknown command and flag, zero length, no context)', async (t) => {
  const { connect, backend } = await start(t);
  backend.data.fill(0x5a, 0, 4096);
  const { c } = await ready(connect, false);
  const expectErr = async (req: Parameters<RawClient['request']>[0], errno: number, what: string, payload?: Buffer) => {
    c.request(req, false, payload);
    const r = await c.readReply();
    assert.equal(r.error, errno, what);
  };
  await expectErr({ type: Cmd.READ, offset: BigInt(backend.size), length: 1n }, NbdErr.EINVAL, 'read past the end');
  await expectErr({ type: Cmd.READ, offset: 0xffffffffffffff00n, length: 512n }, NbdErr.EINVAL, 'offset near 2^64 (no overflow)');
  await expectErr({ type: Cmd.WRITE, offset: BigInt(backend.size - 1), length: 2n }, NbdErr.ENOSPC, 'write past the end', Buffer.alloc(2));
  await expectErr({ type: Cmd.READ, length: BigInt(33 * MiB) }, NbdErr.EINVAL, 'read above 32 MiB');
  await expectErr({ type: 42, length: 0n }, NbdErr.EINVAL, 'unknown command');
  await expectErr({ type: Cmd.READ, flags: 0x8000, length: 1n }, NbdErr.EINVAL, 'unknown flag');
  await expectErr({ type: Cmd.WRITE_ZEROES, flags: CmdFlag.REQ_ONE, length: 1n }, NbdErr.EINVAL, 'flag of another command');
  await expectErr({ type: Cmd.FLUSH, offset: 1n }, NbdErr.EINVAL, 'flush with an offset');
  await expectErr({ type: Cmd.BLOCK_STATUS, length: 512n }, NbdErr.EINVAL, 'block status without structured replies');
  // a 33 MiB WRITE: the payload is consumed, EOVERFLOW, and the stream stays in sync
  await expectErr({ type: Cmd.WRITE, length: BigInt(33 * MiB) }, NbdErr.EOVERFLOW, 'write above 32 MiB', Buffer.alloc(33 * MiB, 1));
  c.request({ type: Cmd.WRITE, length: 0n });
  assert.equal((await c.readReply()).error, 0, 'zero-length write');
  c.request({ type: Cmd.READ, cookie: 77n, length: 4096n });
  const r = await c.readReply(4096);
  assert.equal(r.cookie, 77n);
  assert.ok(r.payload.every((b) => b === 0x5a), 'the connection still works');
});

test('read-only exports answer EPERM to WRITE, TRIM and WRITE_ZEROES', async (t) => {
  const { connect } = await start(t, { backend: memoryBackend(MiB, { readOnly: true }) });
  const { c, flags } = await ready(connect, false);
  assert.ok(flags & TFlag.READ_ONLY);
  for (const [type, payload] of [[Cmd.WRITE, Buffer.alloc(512)], [Cmd.TRIM, undefined], [Cmd.WRITE_ZEROES, undefined]] as const) {
    c.request({ type, length: 512n }, false, payload);
    assert.equal((await c.readReply()).error, NbdErr.EPERM, `command ${type}`);
  }
});

test('structured replies: zero-length read is one NONE chunk, block status REQ_ONE gives one extent, errors are ERROR chunks', async (t) => {
  const backend = memoryBackend(MiB, { extents: (o, l) => [{ offset: o, length: Math.min(l, 65536 - (o % 65536)), state: 'data' }, ...(l > 65536 - (o % 65536) ? [{ offset: o + 65536 - (o % 65536), length: l - (65536 - (o % 65536)), state: 'zero' as const }] : [])] });
  const { connect } = await start(t, { backend });
  const { c } = await ready(connect, true, ['base:allocation']);
  c.request({ type: Cmd.READ, length: 0n });
  const none = await c.readReply();
  assert.equal(none.type, ReplyType.NONE);
  assert.equal(none.flags, 1);
  c.request({ type: Cmd.BLOCK_STATUS, flags: CmdFlag.REQ_ONE, length: BigInt(MiB) });
  const one = await c.readReply();
  assert.equal(one.type, ReplyType.BLOCK_STATUS);
  assert.equal(one.payload.length, 4 + 8);
  assert.equal(one.payload.readUInt32BE(4), 65536);
  c.request({ type: Cmd.BLOCK_STATUS, length: BigInt(MiB) });
  const all = await c.readReply();
  assert.deepEqual([all.payload.readUInt32BE(4), all.payload.readUInt32BE(8), all.payload.readUInt32BE(12), all.payload.readUInt32BE(16)], [65536, 0, MiB - 65536, 3]);
  c.request({ type: Cmd.BLOCK_STATUS, length: 0n });
  const zero = await c.readReply();
  assert.equal(zero.type, ReplyType.ERROR);
  assert.equal(zero.payload.readUInt32BE(0), NbdErr.EINVAL);
});

test('a client reading its replies slowly holds one drain wait, not one listener per request', async (t) => {
  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  const { connect } = await start(t, { backend: memoryBackend(4 * MiB), limits: { maxQueuedReplies: 0 } });
  const { c } = await ready(connect, false);
  c.socket.pause();
  for (let i = 0; i < 64; i++) c.request({ type: Cmd.READ, cookie: BigInt(i), offset: 0n, length: BigInt(MiB) });
  await new Promise((r) => setTimeout(r, 300));
  c.socket.resume();
  for (let i = 0; i < 64; i++) await c.readReply(MiB);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(warnings.map((w) => w.name), []);
});

test('replies complete out of order, and a client that never reads is held at 16 requests in flight', async (t) => {
  const backend = memoryBackend(MiB);
  let started = 0;
  const gates: (() => void)[] = [];
  const read = backend.read;
  backend.read = async (o, l) => {
    started++;
    if (o === 0) await new Promise<void>((r) => gates.push(r));
    return read(o, l);
  };
  const { connect } = await start(t, { backend });
  const { c } = await ready(connect, false);
  c.request({ type: Cmd.READ, cookie: 1n, offset: 0n, length: 512n });
  c.request({ type: Cmd.READ, cookie: 2n, offset: 512n, length: 512n });
  assert.equal((await c.readReply(512)).cookie, 2n, 'the second request answered first');
  gates.shift()!();
  assert.equal((await c.readReply(512)).cookie, 1n);
  // 100 reads of block 0 all stall: the server must stop reading requests at its in-flight bound
  started = 0;
  for (let i = 0; i < 100; i++) c.request({ type: Cmd.READ, cookie: BigInt(100 + i), offset: 0n, length: 512n });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(started, 16, 'in flight per connection is bounded');
  for (let i = 0; i < 100; i++) {
    while (gates.length === 0) await new Promise((r) => setTimeout(r, 5));
    gates.shift()!();
    await c.readReply(512);
  }
});

test('extended headers (behind a flag): 32-byte requests, extended chunks, BLOCK_STATUS_EXT, no STRUCTURED_REPLY or EXPORT_NAME afterwards', async (t) => {
  const { connect, backend } = await start(t, { extendedHeaders: true });
  const c = await connect();
  await c.start();
  assert.equal((await c.option(Opt.EXTENDED_HEADERS))[0]!.type, Rep.ACK);
  assert.equal((await c.option(Opt.STRUCTURED_REPLY))[0]!.type, Rep.ERR_EXT_HEADER_REQD);
  await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('', ['base:allocation']));
  assert.equal((await c.go()).at(-1)!.type, Rep.ACK);
  c.request({ type: Cmd.WRITE, flags: CmdFlag.PAYLOAD_LEN, cookie: 5n, offset: 4096n, length: 3n }, true, Buffer.from('abc'));
  const w = await c.readReply();
  assert.deepEqual([w.magic, w.type, w.cookie, w.offset], [EXTENDED_REPLY_MAGIC, ReplyType.NONE, 5n, 4096n]);
  assert.equal(backend.data.subarray(4096, 4099).toString(), 'abc');
  c.request({ type: Cmd.READ, cookie: 6n, offset: 4096n, length: 3n }, true);
  const r = await c.readReply();
  assert.deepEqual([r.type, r.offset, r.payload.subarray(8).toString()], [ReplyType.OFFSET_DATA, 4096n, 'abc']);
  c.request({ type: Cmd.BLOCK_STATUS, cookie: 7n, length: BigInt(backend.size) }, true);
  const bs = await c.readReply();
  assert.equal(bs.type, ReplyType.BLOCK_STATUS_EXT);
  assert.deepEqual([bs.payload.readUInt32BE(4), Number(bs.payload.readBigUInt64BE(8))], [1, backend.size]);
  const x = await connect();
  await x.start(FLAG_C_FIXED_NEWSTYLE);
  await x.option(Opt.EXTENDED_HEADERS);
  x.send(encodeOption(Opt.EXPORT_NAME));
  assert.ok(await x.closedWithin(2000), 'EXPORT_NAME is forbidden once extended headers are on');
});

test('CAN_MULTI_CONN is advertised only when more than one connection may share the export', async (t) => {
  const a = await start(t, { shared: 4 });
  assert.ok((await ready(a.connect, false)).flags & TFlag.CAN_MULTI_CONN);
  const b = await start(t, { shared: 1 });
  assert.equal((await ready(b.connect, false)).flags & TFlag.CAN_MULTI_CONN, 0);
});

test('--shared 1: a second client waits, unanswered, until the first leaves', async (t) => {
  const { connect } = await start(t, { shared: 1 });
  const { c: first } = await ready(connect, false);
  const second = await connect();
  const greeting = second.reader.read(18);
  let greeted = false;
  void greeting.then(() => (greeted = true));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(greeted, false, 'no greeting while the first client is served');
  first.request({ type: Cmd.DISC });
  await greeting;
  assert.equal(greeted, true);
});

test('close() lets a request in flight finish and be answered, then refuses new clients', async (t) => {
  const backend = memoryBackend(MiB);
  let gate!: () => void;
  backend.write = async (o, d) => {
    await new Promise<void>((r) => (gate = r));
    d.copy(backend.data, o);
  };
  const { connect, server } = await start(t, { backend });
  const { c } = await ready(connect, false);
  c.request({ type: Cmd.WRITE, cookie: 3n, length: 4n }, false, Buffer.from('wxyz'));
  await new Promise((r) => setTimeout(r, 50));
  const closing = server.close();
  setTimeout(() => gate(), 100);
  const r = await c.readReply();
  assert.deepEqual([r.cookie, r.error], [3n, 0]);
  await closing;
  assert.equal(backend.data.subarray(0, 4).toString(), 'wxyz');
  assert.ok(backend.flushes >= 1, 'flushed on close');
  await assert.rejects(RawClient.connect(server.address as { socket: string }));
});

test('--dir: names that climb out, absolute names and symlinks out of the folder are no such export', async (t) => {
  const root = (await tmpDir(t)).path;
  const dir = join(root, 'served');
  await mkdir(join(dir, 'sub'), { recursive: true });
  await writeFile(join(root, 'secret.raw'), Buffer.alloc(4096, 1));
  await writeFile(join(dir, 'disk.raw'), Buffer.alloc(4096, 2));
  await writeFile(join(dir, 'sub', 'inner.raw'), Buffer.alloc(4096, 3));
  await symlink(join(root, 'secret.raw'), join(dir, 'out.raw'));
  await symlink('disk.raw', join(dir, 'alias.raw'));
  for (const bad of ['../secret.raw', join(root, 'secret.raw'), 'out.raw', 'sub/../../secret.raw', '', 'sub', 'missing.raw', 'a\0b', './disk.raw']) {
    assert.equal(await safeJoin(dir, bad), undefined, JSON.stringify(bad));
  }
  assert.ok(await safeJoin(dir, 'disk.raw'));
  assert.ok(await safeJoin(dir, 'alias.raw'), 'a symlink that stays inside is fine');
  assert.ok(await safeJoin(dir, 'sub/inner.raw'));
  const table = new ExportTable([], { dir });
  assert.deepEqual((await table.list()).map((e) => e.name), ['alias.raw', 'disk.raw']);
  // two names of one file share one open image (two writers on one file would corrupt it)
  const a = await table.acquire((await table.find('disk.raw'))!);
  const b = await table.acquire((await table.find('alias.raw'))!);
  assert.equal(a, b);
  await table.closeAll();
  const server = await serve({ dir, listen: { socket: join(root, 's.sock') } });
  t.after(() => server.close());
  const c = await RawClient.connect(server.address as { socket: string });
  t.after(() => c.close());
  await c.start();
  assert.equal((await c.go('../secret.raw')).at(-1)!.type, Rep.ERR_UNKNOWN);
  assert.equal((await c.go('out.raw')).at(-1)!.type, Rep.ERR_UNKNOWN);
  assert.equal((await c.go('disk.raw')).at(-1)!.type, Rep.ACK);
  c.request({ type: Cmd.READ, length: 16n });
  assert.ok((await c.readReply(16)).payload.every((b) => b === 2));
});
