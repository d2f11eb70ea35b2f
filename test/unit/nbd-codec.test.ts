/**
 * The NBD codec (src/nbd/protocol) against byte layouts written out by hand from the spec
 * (doc/proto.md and the extension-ext-header branch): every golden buffer here is built with
 * literal hex, independently of the field tables.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DiskError } from '../../src/core/errors.js';
import { Cmd, CmdFlag, Info, Opt, Rep, ReplyType, TFlag } from '../../src/nbd/protocol/constants.js';
import * as S from '../../src/nbd/protocol/structs.js';
import {
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeRequest,
  encodeBlockStatusChunk,
  encodeDataChunkHead,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeNoneChunk,
  encodeOption,
  encodeOptionReply,
  encodeRequest,
  encodeServerEntry,
  encodeSimpleReply,
  quoteName,
  wireString,
} from '../../src/nbd/protocol/codec.js';
import { statusExtents } from '../../src/nbd/server/transmission.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('field tables have the sizes the spec gives', () => {
  const sizes: [{ size: number }, number][] = [
    [S.Greeting, 18], [S.OptionHeader, 16], [S.OptionReplyHeader, 20], [S.ExportNameReply, 10], [S.InfoExport, 12], [S.InfoBlockSize, 14],
    [S.Request, 28], [S.ExtendedRequest, 32], [S.SimpleReply, 16], [S.StructuredChunkHeader, 20], [S.ExtendedChunkHeader, 32],
    [S.BlockDescriptor, 8], [S.BlockDescriptorExt, 16], [S.ErrorChunkHead, 6],
  ];
  for (const [s, n] of sizes) assert.equal(s.size, n);
});

test('greeting, option reply, export-name reply and INFO items match hand-written bytes', () => {
  assert.deepEqual(encodeGreeting(3), hex('4e42444d41474943 49484156454f5054 0003'));
  assert.deepEqual(encodeOptionReply(Opt.GO, Rep.ACK), hex('0003e889045565a9 00000007 00000001 00000000'));
  assert.deepEqual(encodeOptionReply(Opt.LIST, Rep.ERR_UNSUP, Buffer.from('x')), hex('0003e889045565a9 00000003 80000001 00000001 78'));
  assert.deepEqual(encodeExportNameReply(0x100000, 0x0103, true), hex('0000000000100000 0103'));
  assert.equal(encodeExportNameReply(1, 1, false).length, 134);
  assert.deepEqual(encodeInfoExport(0x40000000, TFlag.HAS_FLAGS | TFlag.SEND_FLUSH), hex('0000 0000000040000000 0005'));
  assert.deepEqual(encodeInfoBlockSize(1, 4096, 33554432), hex('0003 00000001 00001000 02000000'));
  assert.deepEqual(encodeServerEntry('ab', 'd'), hex('00000002 6162 64'));
});

test('INFO/GO data: decoded, and every inconsistent length refused as INVAL', () => {
  assert.deepEqual(decodeInfoRequest(hex('00000003 646973 0002 0003 0001')), { name: 'dis', infos: [Info.BLOCK_SIZE, Info.NAME] });
  assert.deepEqual(decodeInfoRequest(encodeInfoRequest('', [])), { name: '', infos: [] });
  const bad = [
    hex('ffffffff 00'), // name length 0xffffffff (CVE-2022-26495 shape)
    hex('00000003 6469'), // name runs past the end
    hex('00000001 61 0002 0003'), // count says 2, one given
    hex('00000001 61 0000 0003'), // trailing bytes
    hex('00000001 00 0000'), // NUL in the name
    Buffer.concat([hex('00001001'), Buffer.alloc(4097, 0x61), hex('0000')]), // 4097-byte name
  ];
  for (const b of bad) assert.throws(() => decodeInfoRequest(b), (e: unknown) => e instanceof DiskError && e.code === 'INVAL', b.toString('hex').slice(0, 40));
  const max = decodeInfoRequest(Buffer.concat([hex('00001000'), Buffer.alloc(4096, 0x61), hex('0000')]));
  assert.equal(max.name.length, 4096);
});

test('meta-context data: decoded; lying counts and leftovers refused; too many queries is TOO_BIG (NOSPACE)', () => {
  const data = encodeMetaContextRequest('', ['base:allocation', 'qemu:allocation-depth']);
  assert.deepEqual(data, Buffer.concat([hex('00000000 00000002 0000000f'), Buffer.from('base:allocation'), hex('00000015'), Buffer.from('qemu:allocation-depth')]));
  assert.deepEqual(decodeMetaContextRequest(data, 64), { name: '', queries: ['base:allocation', 'qemu:allocation-depth'] });
  assert.throws(() => decodeMetaContextRequest(hex('00000000 7fffffff'), 64), (e: unknown) => e instanceof DiskError && e.code === 'INVAL');
  assert.throws(() => decodeMetaContextRequest(Buffer.concat([data, hex('00')]), 64), (e: unknown) => e instanceof DiskError && e.code === 'INVAL');
  assert.throws(() => decodeMetaContextRequest(encodeMetaContextRequest('', Array(65).fill('x:y')), 64), (e: unknown) => e instanceof DiskError && e.code === 'NOSPACE');
});

test('compact and extended requests: vectors from the spec layouts, both ways', () => {
  const compact = hex('25609513 0001 0001 0102030405060708 0000000000001000 00000200');
  assert.deepEqual(decodeRequest(compact, false), { flags: CmdFlag.FUA, type: Cmd.WRITE, cookie: 0x0102030405060708n, offset: 4096n, length: 512n });
  assert.deepEqual(encodeRequest(decodeRequest(compact, false)), compact);
  // extended: magic 0x21e41c71, u64 length (an effect length above 4 GiB for WRITE_ZEROES)
  const ext = hex('21e41c71 0002 0006 ffffffffffffffff 0000000100000000 0000000200000000');
  const r = decodeRequest(ext, true);
  assert.deepEqual(r, { flags: CmdFlag.NO_HOLE, type: Cmd.WRITE_ZEROES, cookie: 0xffffffffffffffffn, offset: 1n << 32n, length: 2n << 32n });
  assert.deepEqual(encodeRequest(r, true), ext);
  assert.throws(() => decodeRequest(ext, false), DiskError); // wrong magic for the mode
  assert.throws(() => decodeRequest(compact, true), DiskError);
});

test('replies: simple, structured and extended chunks match the spec layouts', () => {
  assert.deepEqual(encodeSimpleReply(22, 7n), hex('67446698 00000016 0000000000000007'));
  const st = { mode: 'structured' as const, cookie: 9n, offset: 512n };
  assert.deepEqual(encodeNoneChunk(st), hex('668e33ef 0001 0000 0000000000000009 00000000'));
  assert.deepEqual(encodeDataChunkHead(st, 512, 4, true), hex('668e33ef 0001 0001 0000000000000009 0000000c 0000000000000200'));
  assert.deepEqual(encodeErrorChunk(st, 22, 'no'), hex('668e33ef 0001 8001 0000000000000009 00000008 00000016 0002 6e6f'));
  assert.deepEqual(encodeBlockStatusChunk(st, 1, [{ length: 65536, status: 3 }, { length: 512, status: 0 }], false), hex('668e33ef 0000 0005 0000000000000009 00000014 00000001 00010000 00000003 00000200 00000000'));
  const ex = { mode: 'extended' as const, cookie: 9n, offset: 512n };
  // extended chunk header: magic 0x6e8a278c, flags, type, cookie, offset (= request offset), u64 length
  assert.deepEqual(encodeNoneChunk(ex), hex('6e8a278c 0001 0000 0000000000000009 0000000000000200 0000000000000000'));
  assert.deepEqual(
    encodeBlockStatusChunk(ex, 0, [{ length: 2 ** 33, status: 1 }], true),
    hex('6e8a278c 0001 0006 0000000000000009 0000000000000200 0000000000000018 00000000 00000001 0000000200000000 0000000000000001'),
  );
});

test('client-side option framing and string limits', () => {
  assert.deepEqual(encodeOption(Opt.STRUCTURED_REPLY), hex('49484156454f5054 00000008 00000000'));
  assert.equal(wireString('a'.repeat(5000)).length, 4096);
  const cut = wireString('é'.repeat(3000)); // 2-byte characters: never cut inside one
  assert.equal(cut.length, 4096);
  assert.equal(cut.toString('utf8'), 'é'.repeat(2048));
  assert.equal(quoteName('x'.repeat(500)).length, 80 + 3 + 2);
});

test('block status extents: merged per context, REQ_ONE gives one, count capped, depth mapped', () => {
  const ext = [
    { offset: 0, length: 4096, state: 'data' as const, depth: 0 },
    { offset: 4096, length: 4096, state: 'data' as const, depth: 1 },
    { offset: 8192, length: 4096, state: 'zero' as const, depth: 1 },
    { offset: 12288, length: 4096, state: 'unallocated' as const },
  ];
  assert.deepEqual(statusExtents(ext, 'base:allocation', false, 100, false), [{ length: 8192, status: 0 }, { length: 8192, status: 3 }]);
  assert.deepEqual(statusExtents(ext, 'qemu:allocation-depth', false, 100, false), [{ length: 4096, status: 1 }, { length: 8192, status: 2 }, { length: 4096, status: 0 }]);
  assert.deepEqual(statusExtents(ext, 'base:allocation', true, 100, false), [{ length: 8192, status: 0 }]);
  assert.deepEqual(statusExtents(ext, 'qemu:allocation-depth', false, 2, false), [{ length: 4096, status: 1 }, { length: 8192, status: 2 }]);
  // a compact descriptor cannot hold 5 GiB: the answer stops short and the client asks again
  const big = statusExtents([{ offset: 0, length: 5 * 2 ** 30, state: 'data' }], 'base:allocation', false, 100, false);
  assert.equal(big.length, 1);
  assert.ok(big[0]!.length < 2 ** 32 && big[0]!.length % 512 === 0);
  assert.deepEqual(statusExtents([{ offset: 0, length: 5 * 2 ** 30, state: 'data' }], 'base:allocation', false, 100, true), [{ length: 5 * 2 ** 30, status: 0 }]);
  assert.equal(ReplyType.BLOCK_STATUS_EXT, 6);
});
