/**
 * The server's READ reply buffers (src/nbd/server/buffers.ts) and the small-read path of
 * FileStore they feed: reuse by size class, the pool's bounds, and reads that stay exact.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { BufferPool } from '../../src/nbd/server/buffers.js';
import { FileStore } from '../../src/storage/file.js';
import { DiskError } from '../../src/core/errors.js';
import { tmpDir } from '../helpers/tools.js';

test('BufferPool: a returned buffer serves the next read of its size class, at the length asked', () => {
  const pool = new BufferPool(1024 * 1024, 256 * 1024);
  const a = pool.take(5000);
  assert.equal(a.length, 5000);
  assert.equal(a.buffer.byteLength, 8192, 'power-of-two class from 4 KiB');
  pool.give(a);
  assert.equal(pool.bytes, 8192);
  const b = pool.take(8000);
  assert.equal(b.buffer, a.buffer, 'same memory reused');
  assert.equal(b.length, 8000);
  assert.equal(pool.bytes, 0);
  const c = pool.take(4097);
  assert.notEqual(c.buffer, a.buffer, 'an empty class allocates');
});

test('BufferPool: keeps at most maxBytes, never buffers above maxSize, nor foreign ones', () => {
  const pool = new BufferPool(3 * 65536, 65536);
  const bufs = Array.from({ length: 5 }, () => pool.take(65536));
  for (const b of bufs) pool.give(b);
  assert.equal(pool.bytes, 3 * 65536);
  const big = pool.take(65537);
  assert.equal(big.length, 65537);
  pool.give(big);
  assert.equal(pool.bytes, 3 * 65536);
  const fresh = new BufferPool(1 << 20, 1 << 20);
  fresh.give(Buffer.from('not a pool buffer')); // a slab slice: never kept
  fresh.give(Buffer.allocUnsafeSlow(65536).subarray(4096)); // not at offset 0: never kept
  assert.equal(fresh.bytes, 0);
});

test('FileStore small reads (synchronous while fast) return the bytes, and fail as before past the end and after close', async (t) => {
  const dir = (await tmpDir(t)).path;
  const path = join(dir, 'f.bin');
  const data = Buffer.alloc(300 * 1024);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 9)) & 0xff;
  await writeFile(path, data);
  const st = await FileStore.open(path, { readOnly: true });
  for (const [at, n] of [[0, 1], [4095, 4097], [123457, 65536], [1000, 200 * 1024], [data.length - 7, 7]] as const) {
    const got = Buffer.alloc(n);
    await st.readInto(got, at);
    assert.ok(got.equals(data.subarray(at, at + n)), `${n} bytes at ${at}`);
  }
  await assert.rejects(st.readInto(Buffer.alloc(4096), data.length - 100), (e: unknown) => e instanceof DiskError && e.code === 'CORRUPT');
  await st.close();
  await assert.rejects(st.readInto(Buffer.alloc(512), 0), (e: unknown) => e instanceof DiskError);
});
