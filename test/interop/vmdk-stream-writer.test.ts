/**
 * vdkit's streamOptimized writer: its output is read identically by qemu-img, libvmdk
 * (vmdkinfo, pyvmdk) and, when present, VMware's open-vmdk vmdk-convert; its layout is VMware's
 * (grain tables after their grains, grain directory, footer, end-of-stream marker last); it can be
 * written into a pipe, and streams (vdkit's, QEMU's, VMware's) can be read from one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { deflateSync, inflateSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { Disk, convert } from '../../src/index.js';
import { writeStreamOptimized, type StreamSource } from '../../src/formats/vmdk/stream/writer.js';
import { adler32, compressGrains, storedZlib, storedZlibLength } from '../../src/formats/vmdk/stream/deflate-worker.js';
import type { ByteSink } from '../../src/storage/sink.js';
import { bunzip, inCI, optionalTestdata, run, sharedTestdata, skipUnless, tmpDir, whichTool } from '../helpers/tools.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';

const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;
const MiB = 2 ** 20;
const GRAIN = 64 * 1024;
const SECTOR = 512;

/** text-like bytes: compressible, but not trivially */
function textBytes(len: number, seed: number): Buffer {
  const words = ['disk ', 'grain ', 'table ', 'sector ', 'vmware ', 'stream ', 'qemu ', 'block ', '\n'];
  const r = mulberry32(seed);
  const parts: string[] = [];
  let n = 0;
  while (n < len) {
    const w = words[Math.floor(r() * words.length)]!;
    parts.push(w);
    n += w.length;
  }
  return Buffer.from(parts.join('').slice(0, len), 'latin1');
}

/**
 * A raw image of `capacity` bytes with random data, text, written zeros, holes, data across grain
 * and grain-table (32 MiB) boundaries, a grain-table range with no data at all, and the last
 * (partial) grain written.
 */
async function mixedRaw(path: string, capacity: number): Promise<void> {
  const d = await Disk.create(path, { format: 'raw', capacity });
  await d.write(0, textBytes(300 * 1024, 1));
  await d.write(MiB + 100, xorshiftBytes(2 * MiB, 2)); // incompressible, unaligned
  await d.write(5 * MiB, Buffer.alloc(3 * MiB)); // zeros written
  await d.write(32 * MiB - 4096, textBytes(8192, 3)); // across the first grain-table boundary
  // 64..96 MiB: no data (a grain-table range without a table)
  if (capacity > 101 * MiB) await d.write(100 * MiB + 512, Buffer.alloc(512, 0xa5)); // one sector in a grain
  await d.write(capacity - 1536, Buffer.alloc(1536, 0x3c)); // the end of the disk
  await d.close();
}

/** walk the stream as the layout says, with nothing from vdkit's reader */
function walkLayout(buf: Buffer) {
  const le64 = (at: number) => Number(buf.readBigUInt64LE(at));
  const header = (at: number) => ({
    magic: buf.toString('latin1', at, at + 4),
    version: buf.readUInt32LE(at + 4),
    flags: buf.readUInt32LE(at + 8),
    capacity: le64(at + 12),
    grainSize: le64(at + 20),
    descriptorOffset: le64(at + 28),
    descriptorSize: le64(at + 36),
    numGTEsPerGT: buf.readUInt32LE(at + 44),
    rgdOffset: le64(at + 48),
    gdOffset: buf.readBigUInt64LE(at + 56),
    overHead: le64(at + 64),
    compress: buf.readUInt16LE(at + 77),
  });
  const head = header(0);
  const sectors = buf.length / SECTOR;
  const grains: { lba: number; sector: number; size: number }[] = [];
  const tables: { sector: number; afterGrainsOfRange: number }[] = [];
  let gdMarker = -1;
  let footerMarker = -1;
  let eos = -1;
  let s = head.overHead;
  while (s < sectors) {
    const at = s * SECTOR;
    const val = le64(at);
    const size = buf.readUInt32LE(at + 8);
    if (size > 0) {
      grains.push({ lba: val, sector: s, size });
      s += Math.ceil((12 + size) / SECTOR);
      continue;
    }
    const type = buf.readUInt32LE(at + 12);
    if (type === 0) {
      eos = s;
      s += 1;
      break;
    }
    if (type === 1) tables.push({ sector: s + 1, afterGrainsOfRange: Math.floor(grains[grains.length - 1]!.lba / 128 / 512) });
    if (type === 2) gdMarker = s;
    if (type === 3) footerMarker = s;
    s += 1 + val;
  }
  return { head, grains, tables, gdMarker, footerMarker, eos, end: s, footer: footerMarker >= 0 ? header((footerMarker + 1) * SECTOR) : undefined };
}

async function pyvmdkSha256(path: string): Promise<string | undefined> {
  const r = await run('/usr/bin/python3', ['-c', "import pyvmdk,hashlib,sys\nh=pyvmdk.handle(); h.open(sys.argv[1]); h.open_extent_data_files()\nn=h.get_media_size(); m=hashlib.sha256()\nwhile n>0:\n  b=h.read_buffer(min(n,1<<20)); m.update(b); n-=len(b)\nprint(m.hexdigest())", path]);
  return r.code === 0 ? r.stdout.trim() : undefined;
}

async function sha256File(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

function vmdkConvertTool(): string | undefined {
  return whichTool('vmdk-convert') ?? ['/work/scratch/bin/vmdk-convert', process.env.VMDK_CONVERT ?? ''].find((p) => p !== '' && existsSync(p));
}

test('streamOptimized output: VMware layout, read identically by qemu-img, libvmdk and vmdk-convert', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'vmdkinfo')) return;
  const dir = (await tmpDir(t)).path;
  const capacity = 130 * MiB + 3 * SECTOR; // not a whole number of grains
  const raw = join(dir, 'src.img');
  await mixedRaw(raw, capacity);
  const out = join(dir, 'out.vmdk');
  const src = await Disk.open(raw, { readOnly: true, format: 'raw' });
  await convert(src, out, { format: 'vmdk', type: 'streamOptimized', adapterType: 'lsilogic' });
  await src.close();

  // qemu-img: identical content, no errors, and it sees a stream
  const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', raw, out]);
  assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
  const chk = await run('qemu-img', ['check', out]);
  assert.equal(chk.code, 0, chk.stdout + chk.stderr);
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', out])).stdout);
  assert.equal(info['virtual-size'], capacity);
  assert.equal(info['format-specific']?.data?.['create-type'], 'streamOptimized');

  // libvmdk
  const vi = await run('vmdkinfo', [out]);
  assert.equal(vi.code, 0, vi.stderr);
  assert.match(vi.stdout, /Disk type:\s+Stream optimized/);
  assert.match(vi.stdout, new RegExp(`Media size:.*\\(${capacity} bytes\\)`));
  const py = await pyvmdkSha256(out);
  if (py === undefined && inCI()) assert.fail('python3-libvmdk (pyvmdk) is not installed; CI installs it');
  if (py === undefined) t.diagnostic('pyvmdk not installed (apt-get install python3-libvmdk): libvmdk content check left out');
  else assert.equal(py, await sha256File(raw), 'libvmdk reads the same bytes');

  // the layout, walked by the test itself
  const buf = await readFile(out);
  assert.equal(buf.length % SECTOR, 0, 'file length is whole sectors');
  const L = walkLayout(buf);
  assert.equal(L.head.magic, 'KDMV');
  assert.equal(L.head.version, 3);
  assert.equal(L.head.flags, 0x30001);
  assert.equal(L.head.gdOffset, 0xffffffffffffffffn, 'the leading header says: grain directory at the end');
  assert.equal(L.head.rgdOffset, 0);
  assert.equal(L.head.compress, 1);
  assert.equal(L.head.grainSize, 128);
  assert.equal(L.head.capacity, capacity / SECTOR);
  assert.equal(L.head.overHead % 128, 0, 'first grain grain-aligned');
  const descriptor = buf.toString('utf8', SECTOR, (1 + L.head.descriptorSize) * SECTOR).replace(/\0+$/, '');
  assert.match(descriptor, /createType="streamOptimized"/);
  assert.match(descriptor, new RegExp(`^RW ${capacity / SECTOR} SPARSE "out.vmdk"$`, 'm'), 'the extent names the file itself');
  assert.ok(L.eos >= 0 && L.end === buf.length / SECTOR, 'the end-of-stream marker is the last sector');
  assert.ok(buf.subarray(L.eos * SECTOR).equals(Buffer.alloc(SECTOR)), 'EOS is an all-zero sector');
  assert.equal(L.footerMarker, L.eos - 2, 'footer marker + footer right before EOS');
  assert.ok(L.gdMarker >= 0 && L.gdMarker < L.footerMarker, 'grain directory marker before the footer');
  assert.ok(L.footer, 'footer present');
  assert.equal(L.footer!.magic, 'KDMV');
  assert.equal(Number(L.footer!.gdOffset), L.gdMarker + 1, 'the footer points at the grain directory');
  assert.deepEqual({ ...L.footer, gdOffset: 0n }, { ...L.head, gdOffset: 0n }, 'footer = header except gdOffset');
  // grains ascending, zero grains left out, each grain table after the grains of its range
  for (let i = 1; i < L.grains.length; i++) assert.ok(L.grains[i]!.lba > L.grains[i - 1]!.lba, 'grains in ascending LBA');
  const gd = [...Array(Math.ceil(capacity / GRAIN / 512)).keys()].map((i) => buf.readUInt32LE((L.gdMarker + 1) * SECTOR + 4 * i));
  assert.equal(gd.length, 5);
  assert.equal(gd[2], 0, 'the range without data has no grain table');
  const expectedGrains = new Set<number>();
  const rawBuf = await readFile(raw);
  for (let g = 0; g * GRAIN < capacity; g++) {
    if (!rawBuf.subarray(g * GRAIN, Math.min(capacity, (g + 1) * GRAIN)).equals(Buffer.alloc(Math.min(GRAIN, capacity - g * GRAIN)))) expectedGrains.add(g * 128);
  }
  assert.deepEqual(new Set(L.grains.map((g) => g.lba)), expectedGrains, 'exactly the non-zero grains are stored');
  for (const tb of L.tables) {
    const range = tb.afterGrainsOfRange;
    assert.equal(gd[range], tb.sector, `GD entry ${range} points at the table that follows its grains`);
    for (const g of L.grains.filter((x) => Math.floor(x.lba / 128 / 512) === range)) {
      assert.equal(buf.readUInt32LE(tb.sector * SECTOR + 4 * ((g.lba / 128) % 512)), g.sector, 'grain table entry points at the grain marker');
      assert.ok(g.sector < tb.sector, 'grains come before their table');
    }
  }
  // every grain is one zlib stream (RFC 1950) of a whole grain
  for (const g of L.grains) {
    const z = buf.subarray(g.sector * SECTOR + 12, g.sector * SECTOR + 12 + g.size);
    assert.equal(z[0]! & 0x0f, 8, 'zlib header (deflate method)');
    assert.equal(inflateSync(z).length, GRAIN);
  }

  // VMware's own tool, when present
  const vc = vmdkConvertTool();
  if (!vc) {
    t.diagnostic('vmdk-convert (VMware open-vmdk) not present: build it from github.com/vmware/open-vmdk and put it on PATH or at /work/scratch/bin/vmdk-convert to include it; qemu-img and libvmdk checked the stream');
  } else {
    const again = join(dir, 'by-vmdk-convert.vmdk');
    const r = await run(vc, [out, again]);
    assert.equal(r.code, 0, `vmdk-convert could not read vdkit's stream: ${r.stdout}${r.stderr}`);
    const c2 = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', raw, again]);
    assert.equal(c2.code, 0, `vmdk-convert read vdkit's stream differently: ${c2.stdout}${c2.stderr}`);
    t.diagnostic(`vmdk-convert (${vc}) read the stream and wrote the same content`);
  }
});

test('the compressor: zero grains left out, incompressible grains stored, every grain inflates back', () => {
  const data = Buffer.concat([xorshiftBytes(GRAIN, 7), Buffer.alloc(GRAIN), textBytes(GRAIN, 8), Buffer.alloc(GRAIN, 0x11)]);
  const ab = new ArrayBuffer(data.length);
  data.copy(Buffer.from(ab));
  const r = compressGrains({ id: 1, data: new Uint8Array(ab), lba: 1280, grainBytes: GRAIN, level: 6 });
  assert.deepEqual(r.grains.filter((_, i) => i % 2 === 0), [0, 2, 3], 'grain 1 (zeros) left out');
  const out = Buffer.from(r.out.buffer, r.out.byteOffset, r.out.byteLength);
  let at = 0;
  for (let i = 0; i < 3; i++) {
    const g = r.grains[2 * i]!;
    const sectors = r.grains[2 * i + 1]!;
    assert.equal(Number(out.readBigUInt64LE(at)), 1280 + g * 128, 'marker LBA');
    const size = out.readUInt32LE(at + 8);
    assert.equal(sectors, Math.ceil((12 + size) / SECTOR));
    assert.ok(inflateSync(out.subarray(at + 12, at + 12 + size)).equals(data.subarray(g * GRAIN, (g + 1) * GRAIN)));
    if (g === 0) assert.ok(size < GRAIN + 64, 'random data stored, not grown by a compressor');
    if (g === 2) assert.ok(size < GRAIN / 2, 'text compressed');
    at += sectors * SECTOR;
  }
  assert.equal(at, out.length);
});

test('stored grains are valid zlib streams; Adler-32 agrees with zlib', () => {
  for (const n of [1, 7, 255, 5552, 5553, 65535, 65536, 65537, 131071]) {
    const data = xorshiftBytes(n, n);
    const out = Buffer.alloc(storedZlibLength(n) + 5, 0xee);
    const len = storedZlib(data, out, 3);
    assert.equal(len, storedZlibLength(n));
    assert.ok(inflateSync(out.subarray(3, 3 + len)).equals(data), `${n} bytes round trip through zlib`);
    assert.equal(out[3 + len], 0xee, 'nothing written past the stream');
    const z = deflateSync(data, { level: 0 });
    assert.equal(adler32(data), z.readUInt32BE(z.length - 4), `Adler-32 of ${n} bytes`);
  }
  const ones = Buffer.alloc(65536, 0xff); // the largest sums
  const z = deflateSync(ones);
  assert.equal(adler32(ones), z.readUInt32BE(z.length - 4));
});

test('the stream does not depend on how many compression threads ran', async () => {
  const capacity = 40 * MiB;
  const content = Buffer.alloc(capacity);
  xorshiftBytes(3 * MiB, 9).copy(content, 100);
  textBytes(5 * MiB, 10).copy(content, 20 * MiB);
  content.fill(0x77, 33 * MiB, 33 * MiB + 1000);
  const source = (): StreamSource => ({
    capacity,
    spans: () => [{ offset: 0, length: capacity }],
    readInto: async (buf, offset) => void content.copy(buf, 0, offset, offset + buf.length),
  });
  const memorySink = (): ByteSink & { bytes(): Buffer } => {
    const parts: Buffer[] = [];
    let position = 0;
    return {
      name: 'memory',
      get position() {
        return position;
      },
      async append(b) {
        parts.push(Buffer.from(b));
        position += b.length;
      },
      async flush() {},
      async close() {},
      bytes: () => Buffer.concat(parts),
    };
  };
  const outs: Buffer[] = [];
  for (const workers of [1, 2, 4]) {
    const sink = memorySink();
    const ddb: [string, string][] = [['uuid', 'fixed'], ['longContentID', '0'.repeat(32)]];
    await writeStreamOptimized(source(), sink, { fileName: 'x.vmdk', workers, ddb });
    const b = sink.bytes();
    // the descriptor holds a random CID: blank it, the rest must match byte for byte
    b.fill(0, SECTOR, 128 * SECTOR);
    outs.push(b);
  }
  assert.ok(outs[0]!.equals(outs[1]!) && outs[0]!.equals(outs[2]!), 'same bytes with 1, 2 and 4 threads');
});

/** run the CLI with stdin from a file (or nothing) and stdout to a file, through real pipes */
function cliPiped(args: string[], stdinFrom?: string, stdoutTo?: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d) => (stderr += d));
    if (stdoutTo) p.stdout.pipe(createWriteStream(stdoutTo));
    else p.stdout.resume();
    if (stdinFrom) createReadStream(stdinFrom).pipe(p.stdin).on('error', () => {});
    else p.stdin.end();
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? 128, stderr }));
  });
}

test('pipes: stream to stdout, streams and raw from stdin, raw to stdout', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'bzip2')) return;
  const dir = (await tmpDir(t)).path;
  const capacity = 70 * MiB;
  const raw = join(dir, 'src.img');
  await mixedRaw(raw, capacity);
  const same = async (a: string, fa: string, b: string, fb: string, what: string) => {
    const c = await run('qemu-img', ['compare', '-f', fa, '-F', fb, a, b]);
    assert.equal(c.code, 0, `${what}: ${c.stdout}${c.stderr}`);
  };

  // vdkit stream -> stdout (a pipe: no seeking possible)
  const piped = join(dir, 'piped.vmdk');
  let r = await cliPiped(['convert', '-f', 'raw', '-O', 'vmdk', '-t', 'streamOptimized', '--stream-name', 'piped.vmdk', raw, '-'], undefined, piped);
  assert.equal(r.code, 0, r.stderr);
  await same(raw, 'raw', piped, 'vmdk', 'stream written to a pipe');
  assert.equal((await run('qemu-img', ['check', piped])).code, 0);
  assert.match(await readFile(piped, 'latin1').then((s) => s.slice(512, 2048)), /SPARSE "piped\.vmdk"/);

  // stdin: vdkit's stream -> vhdx
  const vhdx = join(dir, 'from-pipe.vhdx');
  r = await cliPiped(['convert', '-O', 'vhdx', '-', vhdx], piped);
  assert.equal(r.code, 0, r.stderr);
  await same(raw, 'raw', vhdx, 'vhdx', 'vdkit stream read from a pipe');

  // stdin: QEMU's stream (tables in front, no end-of-stream marker) -> raw on stdout
  const qstream = join(dir, 'qemu-stream.vmdk');
  assert.equal((await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, qstream])).code, 0);
  const back = join(dir, 'back.img');
  r = await cliPiped(['convert', '-O', 'raw', '-', '-'], qstream, back);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await stat(back)).size, capacity);
  assert.equal(await sha256File(back), await sha256File(raw), 'QEMU stream read from a pipe');

  // stdin: VMware's stream (iotest-version3.vmdk, 16 GiB virtual) -> qcow2, compared with qemu's reading
  const q = join(dir, 'v3.qcow2');
  if (optionalTestdata(t, sharedTestdata('iotest-version3.vmdk.bz2'), "VMware's stream from a pipe")) {
    const v3 = join(dir, 'iotest-version3.vmdk');
    await bunzip(sharedTestdata('iotest-version3.vmdk.bz2'), v3);
    r = await cliPiped(['convert', '-O', 'qcow2', '-', q], v3);
    assert.equal(r.code, 0, r.stderr);
    await same(v3, 'vmdk', q, 'qcow2', 'VMware stream read from a pipe');
  } else {
    r = await cliPiped(['convert', '-f', 'raw', '--input-size', String(capacity), '-O', 'qcow2', '-', q], raw);
    assert.equal(r.code, 0, r.stderr);
  }

  // stdin: raw -> streamOptimized file (size given), and raw -> raw stdout without one
  const s2 = join(dir, 'from-raw-pipe.vmdk');
  r = await cliPiped(['convert', '-f', 'raw', '--input-size', String(capacity), '-O', 'vmdk', '-t', 'streamOptimized', '-', s2], raw);
  assert.equal(r.code, 0, r.stderr);
  await same(raw, 'raw', s2, 'vmdk', 'raw from a pipe to a stream');
  const copy = join(dir, 'copy.img');
  r = await cliPiped(['convert', '-f', 'raw', '-O', 'raw', '-', '-'], raw, copy);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await sha256File(copy), await sha256File(raw));

  // raw from stdin into a sparse format without a size: a clear usage error
  r = await cliPiped(['convert', '-f', 'raw', '-O', 'qcow2', '-', join(dir, 'x.qcow2')], raw);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--input-size/);
  // a format that needs seeking cannot come from a pipe
  r = await cliPiped(['convert', '-f', 'qcow2', '-O', 'raw', '-', '-'], q);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /NOTSUPPORTED/);
});

test('bad streams from a pipe give clear errors, fast', async (t) => {
  const dir = (await tmpDir(t)).path;
  const raw = join(dir, 'src.img');
  await mixedRaw(raw, 40 * MiB);
  const good = join(dir, 'good.vmdk');
  const src = await Disk.open(raw, { readOnly: true, format: 'raw' });
  await convert(src, good, { format: 'vmdk', type: 'streamOptimized' });
  await src.close();
  const buf = await readFile(good);
  const L = walkLayout(buf);
  const first = L.grains[0]!;
  const second = L.grains[1]!;
  const cases: [string, (b: Buffer) => Buffer, RegExp][] = [
    ['truncated inside a grain', (b) => b.subarray(0, second.sector * SECTOR + 100), /CORRUPT.*(ended|ends)/s],
    ['grain size beyond two grains', (b) => (b.writeUInt32LE(3 * GRAIN, first.sector * SECTOR + 8), b), /CORRUPT.*size/s],
    ['grains out of order', (b) => (b.writeBigUInt64LE(BigInt(second.lba), first.sector * SECTOR), b), /CORRUPT.*lba/s],
    ['grain past the end of the disk', (b) => (b.writeBigUInt64LE(1n << 40n, first.sector * SECTOR), b), /CORRUPT.*lba/s],
    ['broken zlib data', (b) => (b.fill(0xff, first.sector * SECTOR + 12, first.sector * SECTOR + 40), b), /ZLIB.*data/s],
    ['metadata marker claiming 2^60 sectors', (b) => (b.writeBigUInt64LE(1n << 60n, L.tables[0]!.sector * SECTOR - SECTOR), b), /CORRUPT/],
    ['not compressed', (b) => (b.writeUInt32LE(0x3, 8), b), /NOTSUPPORTED.*flags/s],
  ];
  for (const [what, damage, expected] of cases) {
    const bad = join(dir, 'bad.vmdk');
    await writeFile(bad, damage(Buffer.from(buf)));
    const started = Date.now();
    const r = await cliPiped(['convert', '-O', 'raw', '-', join(dir, `out-${what.replace(/\W+/g, '-')}.img`)], bad);
    assert.equal(r.code, 1, `${what}: ${r.stderr}`);
    assert.match(r.stderr, expected, what);
    assert.ok(Date.now() - started < 10_000, `${what}: took too long`);
  }
});
