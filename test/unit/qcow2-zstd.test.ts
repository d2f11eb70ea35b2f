/**
 * zstd compressed clusters (qcow2 compression_type 1): the frame walker finds a frame's exact end
 * in a span with bytes after it (RFC 8878 frame and block headers), frames without a content
 * size decode into one cluster (the library sizes its output by that field when present: the
 * walker refuses a size other than the cluster's first), and a damaged cluster is a DiskError naming the file, the L2
 * entry and the guest offset, never a crash or an output larger than a cluster.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, DiskError, convert } from '../../src/index.js';
import { loadZstd } from '../../src/core/platform.js';
import type { Qcow2Image } from '../../src/formats/qcow2/image.js';
import { unzstdCluster, walkZstdFrame } from '../../src/formats/qcow2/zstd.js';
import { tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';

const CS = 65536;
const where = { path: 'x.qcow2', field: 'l2[0][3]', found: 4096, guest: 3 * CS };

/** a cluster that compresses: text-like lines */
function texty(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let at = 0, i = 0; at < n; i++) at += b.write(`line ${i} of cluster ${i % 7}\n`, at);
  return b;
}

test('zstd frame walker: the exact frame length with garbage after it; decode into one cluster', async () => {
  const z = await loadZstd();
  const cluster = texty(CS);
  const frame = Buffer.from(z.compress(cluster, 3));
  const padded = Buffer.concat([frame, xorshiftBytes(700, 5)]);
  const facts = walkZstdFrame(padded);
  assert.ok(typeof facts !== 'string', String(facts));
  assert.equal(facts.length, frame.length);
  assert.equal(facts.contentSize, CS);
  assert.deepEqual(await unzstdCluster(padded, CS, where), cluster);
});

test('zstd: frames without a content size (raw and RLE blocks, window descriptor) decode into one cluster', async () => {
  // magic, descriptor 0 (no content size, not single segment), window 2^16, one last raw block of CS bytes
  const data = xorshiftBytes(CS, 9);
  const rawBlock = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x30, ...le24((CS << 3) | 1)]);
  const raw = Buffer.concat([rawBlock, data, Buffer.alloc(300, 0xaa)]);
  assert.deepEqual(await unzstdCluster(raw, CS, where), data);
  // an RLE block of CS bytes 0x41
  const rle = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x30, ...le24((CS << 3) | (1 << 1) | 1), 0x41]);
  assert.deepEqual(await unzstdCluster(Buffer.concat([rle, Buffer.alloc(16)]), CS, where), Buffer.alloc(CS, 0x41));
  // with the checksum flag the frame ends 4 bytes after its last block
  const summed = Buffer.from(rle);
  summed[4] = 0x04;
  const facts = walkZstdFrame(Buffer.concat([summed, Buffer.alloc(16)]));
  assert.ok(typeof facts !== 'string' && facts.length === rle.length + 4, JSON.stringify(facts));
});

function le24(v: number): number[] {
  return [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff];
}

test('zstd: damaged frames are DiskErrors naming file, L2 entry and guest offset', async () => {
  const z = await loadZstd();
  const good = Buffer.from(z.compress(texty(CS), 3));
  const expectBad = async (bytes: Buffer, re: RegExp) => {
    await assert.rejects(unzstdCluster(bytes, CS, where), (err: unknown) => {
      assert.ok(err instanceof DiskError, String(err));
      assert.equal(err.code, 'CORRUPT');
      assert.equal(err.details.path, 'x.qcow2');
      assert.equal(err.details.field, 'l2[0][3]');
      assert.equal(err.details.guestOffset, 3 * CS);
      assert.match(err.message, re);
      return true;
    });
  };
  await expectBad(Buffer.concat([Buffer.from([0, 0, 0, 0]), good]), /no zstd magic/);
  await expectBad(good.subarray(0, good.length - 10), /runs past/);
  // a content size of 1 GiB (the library would size its output by it): refused before decoding
  const huge = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xa0, 0, 0, 0, 0x40, ...le24((1 << 3) | (1 << 1) | 1), 0]);
  await expectBad(huge, /declares 1073741824 bytes/);
  // a frame with no content size whose blocks make more than a cluster: the decoder stops at the cluster
  const rle2 = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x30, ...le24((CS << 3) | (1 << 1)), 0x41, ...le24((CS << 3) | (1 << 1) | 1), 0x42]);
  await expectBad(rle2, /does not decode|not one cluster/);
  // bytes of the compressed block changed: the decoder fails or makes the wrong amount
  const flipped = Buffer.from(good);
  for (let i = 20; i < flipped.length - 8; i += 3) flipped[i] ^= 0x5a;
  await expectBad(flipped, /does not decode|not one cluster|block/);
  await expectBad(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x30, ...le24((3 << 1) | 1)]), /reserved block type/);
});

test('zstd image: a damaged cluster is a DiskError on read, the others still read', async (t) => {
  const dir = (await tmpDir(t)).path;
  const raw = join(dir, 'src.raw');
  const source = Buffer.concat([texty(CS), texty(CS), Buffer.alloc(CS), xorshiftBytes(CS, 3)]);
  await writeFile(raw, source);
  const out = join(dir, 'z.qcow2');
  const src = await Disk.open(raw, { readOnly: true, format: 'raw' });
  await convert(src, out, { format: 'qcow2', compress: true, compressionType: 'zstd' });
  await src.close();
  const d = await Disk.open(out, { readOnly: true });
  assert.equal(d.image.readMetadata('compressionType'), 'zstd');
  assert.deepEqual(await d.read(0, source.length), source);
  const second = (await (d.image as Qcow2Image).segments(CS, CS))[0]!;
  await d.close();
  assert.ok(second.comp, 'the second cluster is compressed');
  const f = await open(out, 'r+');
  await f.write(Buffer.alloc(64, 0xee), 0, 64, second.comp.offset + 12);
  await f.close();
  const e = await Disk.open(out, { readOnly: true });
  try {
    assert.deepEqual(await e.read(0, CS), source.subarray(0, CS));
    await assert.rejects(e.read(CS, 512), (err: unknown) => err instanceof DiskError && err.code === 'CORRUPT' && err.details.field === 'l2[0][1]' && err.details.guestOffset === CS && err.details.path === out);
  } finally {
    await e.close();
  }
});
