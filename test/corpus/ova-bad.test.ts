/**
 * Hostile and damaged archives, built here header by header: each gives a DiskError whose code
 * and details name the member and the field, quickly (CPU time) and without an allocation sized
 * by a header: path traversal and links refused by extract before anything is written, sizes
 * past the file, truncated members, bad checksums, huge (base-256) sizes and pax headers,
 * manifest mismatches; the stream reader (stdin) gives the same answers. The tar codec is checked
 * against a header GNU tar writes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DiskError, Disk, extractOva, readOva, readTarIndex, verifyOva } from '../../src/index.js';
import { decodeTarHeader, decodeTarNumber, encodeTarHeader, encodeTarNumber, TAR_BLOCK } from '../../src/binary/tar.js';
import { tarMemberStream } from '../../src/ops/ova/stream.js';
import type { ByteStore } from '../../src/storage/store.js';
import { createHash } from 'node:crypto';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';

const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc((TAR_BLOCK - (b.length % TAR_BLOCK)) % TAR_BLOCK)]);

/** a header for `name` with raw control over the fields the tests break */
function header(name: string, size: number, opts: { typeflag?: string; linkname?: string; sizeField?: Buffer } = {}): Buffer {
  const h = encodeTarHeader({ name, size, typeflag: opts.typeflag });
  if (opts.linkname !== undefined || opts.sizeField) {
    if (opts.linkname !== undefined) h.write(opts.linkname, 157, 'latin1');
    if (opts.sizeField) opts.sizeField.copy(h, 124);
    // recompute the checksum after the change
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  }
  return h;
}

const member = (name: string, data: Buffer | string, opts: { typeflag?: string; linkname?: string } = {}) => {
  const d = typeof data === 'string' ? Buffer.from(data) : data;
  return Buffer.concat([header(name, d.length, opts), pad(d)]);
};
const END = Buffer.alloc(2 * TAR_BLOCK);

async function expectError(fn: () => Promise<unknown>, code: string, details: Record<string, unknown>, what: string): Promise<DiskError> {
  const before = process.cpuUsage();
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  const cpu = process.cpuUsage(before);
  assert.ok(caught instanceof DiskError, `${what}: expected a DiskError, got ${String(caught)}`);
  assert.equal(caught.code, code, `${what}: ${caught.message}`);
  for (const [k, v] of Object.entries(details)) assert.equal((caught.details as Record<string, unknown>)[k], v, `${what}: details.${k} (${caught.message})`);
  assert.ok(cpu.user + cpu.system < 500_000, `${what}: fast (${cpu.user + cpu.system} us CPU)`);
  return caught;
}

/** the bytes as a store (readTarIndex uses size and read); `size` may claim more than there is */
const store = (b: Buffer, size = b.length): ByteStore =>
  ({
    name: 'mem',
    readOnly: true,
    size: async () => size,
    read: async (o: number, l: number) => {
      if (o + l > b.length) throw new Error(`test store: read of ${l} at ${o} past ${b.length}`);
      return b.subarray(o, o + l);
    },
  }) as unknown as ByteStore;

test('tar codec: a header GNU tar writes decodes; octal and base-256 numbers round-trip', async (t) => {
  assert.equal(decodeTarNumber(encodeTarNumber(0o777, 8), 'mode', {}), 0o777);
  const big = 2 ** 40 + 12345;
  const enc = encodeTarNumber(big, 12);
  assert.equal(enc[0], 0x80, 'past 8 GiB the size is base-256');
  assert.equal(decodeTarNumber(enc, 'size', {}), big);
  assert.equal(decodeTarNumber(encodeTarNumber(8 ** 11 - 1, 12), 'size', {}), 8 ** 11 - 1);
  const h = decodeTarHeader(encodeTarHeader({ name: 'a.ovf', size: 1234, mtime: 1000 }), { index: 0, offset: 0 });
  assert.deepEqual([h.name, h.size, h.kind, h.mtime], ['a.ovf', 1234, 'file', 1000]);
  if (!skipUnless(t, 'tar')) return;
  const dir = (await tmpDir(t)).path;
  await writeFile(join(dir, 'hello.txt'), 'hello tar\n');
  for (const format of ['ustar', 'gnu', 'pax']) {
    const r = await run('tar', ['cf', join(dir, `${format}.tar`), `--format=${format}`, '-C', dir, 'hello.txt']);
    assert.equal(r.code, 0, r.stderr);
    const members = await readTarIndex(store(await readFile(join(dir, `${format}.tar`))), `${format}.tar`);
    assert.deepEqual(members.map((m) => [m.name, m.kind, m.size]), [['hello.txt', 'file', 10]], format);
  }
});

test('bad archives give errors naming the member and the field, fast', async () => {
  const ok = member('a.ovf', '<Envelope/>');
  // a member whose size runs past the end of the file
  await expectError(() => readTarIndex(store(Buffer.concat([ok, header('disk1.vmdk', 10 * 2 ** 30)])), 'x.ova'), 'CORRUPT', { member: 'disk1.vmdk', field: 'size' }, 'size past the end');
  // a huge base-256 size (2^60): refused as past the end, nothing allocated
  const huge = Buffer.alloc(12);
  huge[0] = 0x80;
  huge.writeBigUInt64BE(2n ** 60n, 4);
  await expectError(() => readTarIndex(store(Buffer.concat([ok, header('disk1.vmdk', 0, { sizeField: huge }), END])), 'x.ova'), 'CORRUPT', { member: 'disk1.vmdk', field: 'size' }, 'huge size');
  // a size too large for a JS number
  const huger = Buffer.alloc(12, 0xff);
  huger[0] = 0x80;
  await expectError(() => readTarIndex(store(Buffer.concat([ok, header('disk1.vmdk', 0, { sizeField: huger }), END])), 'x.ova'), 'CORRUPT', { member: 'disk1.vmdk', field: 'size' }, 'size past 2^53');
  // a truncated member: the data stops short
  const cut = Buffer.concat([ok, member('disk1.vmdk', Buffer.alloc(5000, 1))]).subarray(0, ok.length + TAR_BLOCK + 2000);
  await expectError(() => readTarIndex(store(cut), 'x.ova'), 'CORRUPT', { member: 'disk1.vmdk', field: 'size' }, 'truncated member');
  // a header cut short
  await expectError(() => readTarIndex(store(Buffer.concat([ok, Buffer.alloc(100, 7)])), 'x.ova'), 'CORRUPT', { field: 'header' }, 'header cut short');
  // a bad checksum
  const bad = Buffer.concat([ok, member('disk1.vmdk', 'x'), END]);
  bad[ok.length + 10] ^= 1;
  await expectError(() => readTarIndex(store(bad), 'x.ova'), 'CORRUPT', { field: 'chksum', member: `#2 at byte ${ok.length}` }, 'bad checksum');
  // a size field that is not octal
  await expectError(() => readTarIndex(store(Buffer.concat([header('disk1.vmdk', 0, { sizeField: Buffer.from('12x4\0') }), END])), 'x.ova'), 'CORRUPT', { field: 'size' }, 'size not octal');
  // a pax header larger than the cap is not read into memory
  const paxHuge = Buffer.concat([header('PaxHeader/x', 64 * 1024 * 1024, { typeflag: 'x' }), Buffer.alloc(TAR_BLOCK)]);
  await expectError(async () => readTarIndex(store(paxHuge, 65 * 1024 * 1024), 'x.ova'), 'CORRUPT', { field: 'size' }, 'pax header over the cap');
  // a malformed pax record
  await expectError(() => readTarIndex(store(Buffer.concat([member('PaxHeader/x', '99 path=a\n', { typeflag: 'x' }), ok, END])), 'x.ova'), 'CORRUPT', { field: 'pax record' }, 'bad pax record');
  // not a tar at all
  await expectError(() => readTarIndex(store(Buffer.alloc(100)), 'x.ova'), 'CORRUPT', { field: 'header' }, 'too short');
});

test('extract refuses path traversal, absolute names and links before writing anything; Disk.open cannot reach them', async (t) => {
  const dir = (await tmpDir(t)).path;
  const cases: [string, Buffer][] = [
    ['dotdot', member('../evil.txt', 'x')],
    ['nested dotdot', member('a/../../evil.txt', 'x')],
    ['absolute', member('/tmp/evil.txt', 'x')],
    ['symlink', member('link.vmdk', '', { typeflag: '2', linkname: '/etc/passwd' })],
    ['hardlink', member('hard.vmdk', '', { typeflag: '1', linkname: 'a.ovf' })],
    ['fifo', member('fifo', '', { typeflag: '6' })],
  ];
  for (const [what, bad] of cases) {
    const ova = join(dir, `${what.replace(/ /g, '-')}.ova`);
    // the good member comes first: nothing may be written before the bad one is seen
    await writeFile(ova, Buffer.concat([member('a.ovf', '<Envelope/>'), bad, END]));
    const out = join(dir, `out-${what.replace(/ /g, '-')}`);
    await mkdir(out);
    await expectError(() => extractOva(ova, out), 'PERMISSIONS', { field: 'name' }, what);
    assert.deepEqual(await readdir(out), [], `${what}: nothing extracted`);
  }
  await expectError(() => Disk.open(`${join(dir, 'dotdot.ova')}#../evil.txt`, { readOnly: true }), 'FILENOTFOUND', {}, 'a traversing name is not a member');
  await expectError(() => Disk.open(`${join(dir, 'symlink.ova')}#link.vmdk`, { readOnly: true }), 'FILENOTFOUND', {}, 'a link is not a member');
  await expectError(() => Disk.open(`${join(dir, 'symlink.ova')}#3`, { readOnly: true }), 'FILENOTFOUND', { field: 'member' }, 'no third disk');
});

test('manifest mismatch, unparsable manifest and missing members; the pipe reader agrees on bad archives', async (t) => {
  const dir = (await tmpDir(t)).path;
  const ovf = '<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"/>';
  const sha = (s: string) => createHash('sha256').update(s).digest('hex');
  const ova = join(dir, 'm.ova');
  await writeFile(ova, Buffer.concat([member('m.ovf', ovf), member('m.mf', `SHA256(m.ovf)= ${sha(ovf + ' ')}\nSHA256(gone.vmdk)= ${sha('')}\n`), END]));
  const r = await verifyOva(ova);
  assert.equal(r.ok, false);
  assert.deepEqual(r.checked.map((c) => [c.name, c.ok, c.problem]), [['m.ovf', false, 'digest differs'], ['gone.vmdk', false, 'missing from the archive']]);
  const good = join(dir, 'g.ova');
  await writeFile(good, Buffer.concat([member('g.ovf', ovf), member('g.mf', `SHA256(g.ovf)= ${sha(ovf)}\n`), END]));
  assert.equal((await verifyOva(good)).ok, true);
  const garbled = join(dir, 'x.ova');
  await writeFile(garbled, Buffer.concat([member('x.ovf', ovf), member('x.mf', 'MD5 whatever\n'), END]));
  await expectError(() => readOva(garbled), 'BADDESCRIPTOR', { field: 'line 1' }, 'garbled manifest');
  const dtd = join(dir, 'd.ova');
  await writeFile(dtd, Buffer.concat([member('d.ovf', '<!DOCTYPE x [<!ENTITY a "aaaa">]><Envelope/>'), END]));
  await expectError(() => readOva(dtd), 'BADDESCRIPTOR', { field: 'xml' }, 'DTDs refused');

  // the stream reader (stdin) on the same kinds of damage
  const drain = async (b: Buffer, pick: string) => {
    // in odd-sized pieces, as a pipe delivers them
    async function* pieces() {
      for (let at = 0; at < b.length; at += 1000) yield b.subarray(at, at + 1000);
    }
    for await (const _ of tarMemberStream(pieces(), pick, '-')) void _;
  };
  const badSum = Buffer.concat([member('disk1.vmdk', 'x'), END]);
  badSum[5] ^= 1;
  await expectError(() => drain(badSum, '1'), 'CORRUPT', { field: 'chksum' }, 'stream: bad checksum');
  await expectError(() => drain(Buffer.concat([member('disk1.vmdk', Buffer.alloc(3000, 2))]).subarray(0, 2000), '1'), 'CORRUPT', { member: 'disk1.vmdk', field: 'size' }, 'stream: truncated member');
  await expectError(() => drain(Buffer.concat([member('a.ovf', ovf), END]), 'disk1.vmdk'), 'FILENOTFOUND', { field: 'member' }, 'stream: no such member');
  await expectError(() => drain(Buffer.concat([header('PaxHeader/x', 64 * 1024 * 1024, { typeflag: 'x' })]), '1'), 'CORRUPT', { field: 'size' }, 'stream: pax header over the cap');
});
