/** MemoryStore (src/storage/memory.ts): the sparse in-memory ByteStore the property tests use as model. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DiskError, MemoryStore } from '../../src/index.js';

const PAGE = 65536;
const isCode = (code: string) => (e: unknown) => e instanceof DiskError && e.code === code;

test('a new store has its initial size and reads zeros without allocating', async () => {
  const s = new MemoryStore(10 * PAGE);
  assert.equal(await s.size(), 10 * PAGE);
  const b = await s.read(3 * PAGE - 5, 2 * PAGE);
  assert.equal(b.length, 2 * PAGE);
  assert.ok(b.every((x) => x === 0));
  assert.equal(s.allocatedPages(), 0);
  assert.equal(s.readOnly, false);
  assert.match(s.name, /^memory:\d+$/);
  assert.notEqual(new MemoryStore().name, s.name, 'each store has its own name');
});

test('write then read across page boundaries; only touched pages are allocated', async () => {
  const s = new MemoryStore();
  const data = Buffer.alloc(PAGE + 100);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
  await s.write(PAGE - 50, data);
  assert.equal(await s.size(), PAGE - 50 + data.length, 'a write past the end grows the store');
  assert.equal(s.allocatedPages(), 3);
  assert.ok((await s.read(PAGE - 50, data.length)).equals(data));
  // neighbours are zero
  const around = await s.read(PAGE - 60, 10);
  assert.ok(around.every((x) => x === 0));
  // a partial overwrite
  await s.write(PAGE, Buffer.from('hello'));
  const back = await s.read(PAGE - 50, data.length);
  assert.equal(back.subarray(50, 55).toString(), 'hello');
  assert.ok(back.subarray(0, 50).equals(data.subarray(0, 50)));
  assert.ok(back.subarray(55).equals(data.subarray(55)));
});

test('readInto fills the whole buffer, even a dirty one', async () => {
  const s = new MemoryStore(PAGE);
  await s.write(10, Buffer.from([1, 2, 3]));
  const into = Buffer.alloc(8, 0xff);
  await s.readInto(into, 8);
  assert.deepEqual([...into], [0, 0, 1, 2, 3, 0, 0, 0]);
});

test('reads past the end throw CORRUPT; readZeroPadded pads with zeros instead', async () => {
  const s = new MemoryStore(100);
  await s.write(90, Buffer.alloc(10, 9));
  await assert.rejects(s.read(95, 10), isCode('CORRUPT'));
  await assert.rejects(s.readInto(Buffer.alloc(1), 100), isCode('CORRUPT'));
  const z = await s.readZeroPadded(95, 10);
  assert.deepEqual([...z], [9, 9, 9, 9, 9, 0, 0, 0, 0, 0]);
  const far = await s.readZeroPadded(1000, 4);
  assert.deepEqual([...far], [0, 0, 0, 0]);
  // zero-length reads at the end are fine
  assert.equal((await s.read(100, 0)).length, 0);
});

test('writev writes buffers back to back', async () => {
  const s = new MemoryStore();
  await s.writev(PAGE - 2, [Buffer.from('ab'), Buffer.from('cd'), Buffer.from('ef')]);
  assert.equal((await s.read(PAGE - 2, 6)).toString(), 'abcdef');
  assert.equal(await s.size(), PAGE + 4);
});

test('truncate shrinks (dropping data) and grows (reading zeros, not stale bytes)', async () => {
  const s = new MemoryStore();
  await s.write(0, Buffer.alloc(3 * PAGE, 0xab));
  assert.equal(s.allocatedPages(), 3);
  await s.truncate(PAGE + 10);
  assert.equal(await s.size(), PAGE + 10);
  assert.equal(s.allocatedPages(), 2);
  await assert.rejects(s.read(PAGE + 5, 10), isCode('CORRUPT'));
  await s.truncate(3 * PAGE);
  const b = await s.read(0, 3 * PAGE);
  assert.ok(b.subarray(0, PAGE + 10).every((x) => x === 0xab));
  assert.ok(b.subarray(PAGE + 10).every((x) => x === 0), 'bytes after the old cut read as zero');
  await s.truncate(0);
  assert.equal(await s.size(), 0);
  assert.equal(s.allocatedPages(), 0);
});

test('a read-only store refuses writes and truncation with RDONLY', async () => {
  const s = new MemoryStore(PAGE, true);
  assert.equal(s.readOnly, true);
  await assert.rejects(s.write(0, Buffer.from('x')), isCode('RDONLY'));
  await assert.rejects(s.writev(0, [Buffer.from('x')]), isCode('RDONLY'));
  await assert.rejects(s.truncate(0), isCode('RDONLY'));
  assert.equal(await s.size(), PAGE);
  await s.flush();
  await s.close();
});

test('a returned read buffer is a copy: changing it does not change the store', async () => {
  const s = new MemoryStore();
  await s.write(0, Buffer.from('abc'));
  const b = await s.read(0, 3);
  b[0] = 0x7a;
  assert.equal((await s.read(0, 3)).toString(), 'abc');
  const src = Buffer.from('xyz');
  await s.write(0, src);
  src[0] = 0x41;
  assert.equal((await s.read(0, 3)).toString(), 'xyz', 'write copies its input');
});
