/**
 * The copy engine's -m and -W (qemu-img convert): `inFlight` bounds the reads running at once
 * and is reached, writes stay in virtual order by default and follow read completion with
 * `outOfOrder`; `allocateAll` (-S 0) writes zero blocks too; `sameAs` (-B) skips blocks equal
 * to the backing disk's and writes zeros over its data.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Disk } from '../../src/disk.js';
import { MemoryNamespace } from '../../src/storage/memory.js';
import { copyRanges } from '../../src/ops/copy-ranges.js';
import { xorshiftBytes } from '../helpers/prng.js';

const KiB = 1024;
const CHUNK = 64 * KiB;

async function target(capacity: number) {
  const dst = await Disk.create('t.raw', { format: 'raw', capacity, namespace: new MemoryNamespace() });
  const writes: number[] = [];
  const write = dst.write.bind(dst);
  dst.write = async (offset: number, data: Buffer) => {
    writes.push(offset);
    return write(offset, data);
  };
  return { dst, writes };
}

/** a source of `n` chunks whose first chunks take longest to read; counts the reads running at once */
function slowFirst(content: Buffer) {
  let running = 0;
  let most = 0;
  const read = async (into: Buffer, offset: number) => {
    running++;
    most = Math.max(most, running);
    await sleep(offset < 2 * CHUNK ? 30 : 2);
    content.copy(into, 0, offset, offset + into.length);
    running--;
  };
  return { read, most: () => most };
}

test('inFlight bounds the reads at once and is reached; writes in order unless outOfOrder', async () => {
  const content = xorshiftBytes(16 * CHUNK, 5);
  for (const [inFlight, outOfOrder] of [[1, false], [5, false], [16, false], [5, true], [16, true]] as const) {
    const { dst, writes } = await target(content.length);
    const src = slowFirst(content);
    const n = await copyRanges(src.read, dst, [{ offset: 0, length: content.length }], { chunkSize: CHUNK, zeroBlockSize: CHUNK, label: 't', inFlight, outOfOrder });
    assert.equal(n, content.length);
    assert.ok((await dst.read(0, content.length)).equals(content), `${inFlight}/${outOfOrder}: content`);
    assert.equal(src.most(), inFlight, `${inFlight}/${outOfOrder}: reads at once`);
    const sorted = [...writes].sort((a, b) => a - b);
    if (outOfOrder) assert.notDeepEqual(writes, sorted, `${inFlight}: -W wrote in order although the first chunks were read last`);
    else assert.deepEqual(writes, sorted, `${inFlight}: writes out of order without -W`);
    await dst.close();
  }
  const { dst } = await target(CHUNK);
  await assert.rejects(copyRanges(async () => {}, dst, [], { chunkSize: CHUNK, zeroBlockSize: CHUNK, label: 't', inFlight: 17 }), { code: 'INVAL' });
  await dst.close();
});

test('allocateAll writes zero blocks; sameAs skips what equals the backing disk and zeroes over its data', async () => {
  const content = Buffer.alloc(8 * CHUNK);
  xorshiftBytes(CHUNK, 1).copy(content, 0);
  const read = async (into: Buffer, offset: number) => void content.copy(into, 0, offset, offset + into.length);
  const all = await target(content.length);
  assert.equal(await copyRanges(read, all.dst, [{ offset: 0, length: content.length }], { chunkSize: 2 * CHUNK, zeroBlockSize: CHUNK, label: 't' }), CHUNK);
  assert.equal(await copyRanges(read, all.dst, [{ offset: 0, length: content.length }], { chunkSize: 2 * CHUNK, zeroBlockSize: CHUNK, label: 't', allocateAll: true }), content.length);
  await all.dst.close();
  // the backing disk: chunk 0 as the source, chunk 3 data the source has as zeros, chunk 5 differs
  const base = await Disk.create('b.raw', { format: 'raw', capacity: content.length, namespace: new MemoryNamespace() });
  await base.write(0, content.subarray(0, CHUNK));
  await base.write(3 * CHUNK, Buffer.alloc(CHUNK, 7));
  const child = await target(content.length);
  const changed = Buffer.from(content);
  changed.fill(9, 5 * CHUNK, 6 * CHUNK);
  const readChanged = async (into: Buffer, offset: number) => void changed.copy(into, 0, offset, offset + into.length);
  await copyRanges(readChanged, child.dst, [{ offset: 0, length: content.length }], { chunkSize: 2 * CHUNK, zeroBlockSize: CHUNK, label: 't', sameAs: base });
  assert.deepEqual(child.writes, [3 * CHUNK, 5 * CHUNK]);
  await child.dst.close();
  await base.close();
});

test('an abort stops both orders with CANCELLED, after every read and write in flight has settled', async () => {
  const content = xorshiftBytes(32 * CHUNK, 9);
  for (const outOfOrder of [false, true]) {
    const { dst } = await target(content.length);
    const ac = new AbortController();
    let running = 0;
    let reads = 0;
    const read = async (into: Buffer, offset: number) => {
      running++;
      if (++reads === 6) ac.abort();
      await sleep(3);
      content.copy(into, 0, offset, offset + into.length);
      running--;
    };
    await assert.rejects(copyRanges(read, dst, [{ offset: 0, length: content.length }], { chunkSize: CHUNK, zeroBlockSize: CHUNK, label: 't', inFlight: 4, outOfOrder, signal: ac.signal }), { code: 'CANCELLED' });
    assert.equal(running, 0, `${outOfOrder}: a read still ran after the error`);
    assert.ok(reads < 32, `${outOfOrder}: the copy went on after the abort (${reads} reads)`);
    await dst.close();
  }
});
