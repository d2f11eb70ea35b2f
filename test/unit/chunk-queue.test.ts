import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChunkQueue } from '../../src/binary/chunk-queue.js';

test('ChunkQueue hands out pieces of any size across the buffers that arrived, views where it can', () => {
  const q = new ChunkQueue();
  const a = Buffer.from('abcdef');
  q.push(a);
  q.push(Buffer.alloc(0));
  q.push(Buffer.from('gh'));
  q.push(Buffer.from('ijkl'));
  assert.equal(q.length, 12);
  const head = q.take(2);
  assert.equal(head.toString(), 'ab');
  assert.equal(head.buffer, a.buffer, 'a piece inside one buffer is a view, not a copy');
  assert.equal(q.take(4).toString(), 'cdef');
  assert.equal(q.take(0).length, 0);
  assert.equal(q.take(5).toString(), 'ghijk', 'a piece across buffers (and an empty one) is joined');
  assert.equal(q.length, 1);
  assert.equal(q.take(1).toString(), 'l');
  assert.equal(q.length, 0);
});
