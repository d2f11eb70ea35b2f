/** BlobNamespace (src/storage/blob.ts): picked files as a read-only namespace, here over Node's Blob. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlobNamespace } from '../../src/storage/blob.js';
import { Disk, DiskError, MemoryNamespace } from '../../src/index.js';
import { checksum } from '../../src/ops/checksum.js';

const isCode = (code: string) => (e: unknown) => e instanceof DiskError && e.code === code;

test('names, reads by range, read-only, stat and folders', async () => {
  const bytes = Buffer.from('0123456789abcdef');
  const ns = new BlobNamespace([
    { name: 'a.bin', blob: new Blob([bytes]) },
    { name: 'dir/b.bin', blob: new Blob([Buffer.alloc(3, 7)]) },
  ]);
  assert.deepEqual(ns.names(), ['/a.bin', '/dir/b.bin']);
  const st = await ns.open('a.bin');
  assert.equal(await st.size(), 16);
  assert.equal((await st.read(3, 4)).toString(), '3456');
  assert.deepEqual([...(await st.readZeroPadded(14, 4))], [0x65, 0x66, 0, 0]);
  await assert.rejects(st.read(14, 4), isCode('CORRUPT'));
  await assert.rejects(st.write(0, Buffer.alloc(1)), isCode('RDONLY'));
  await assert.rejects(ns.open('a.bin', { write: true }), isCode('RDONLY'));
  await assert.rejects(ns.create('c.bin'), isCode('RDONLY'));
  await assert.rejects(ns.open('missing.bin'), isCode('FILENOTFOUND'));
  assert.equal((await ns.stat('/dir/b.bin')).size, 3);
  assert.notEqual((await ns.stat('a.bin')).id, (await ns.stat('dir/b.bin')).id);
  assert.equal(await ns.kind('dir'), 'dir');
  assert.equal(await ns.kind('nope'), 'missing');
  assert.deepEqual(await ns.list('/'), ['a.bin', 'dir']);
  assert.equal(ns.resolve('/dir/b.bin', '..\\a.bin'), '/a.bin', 'a Windows hint resolves with / separators');
  assert.throws(() => new BlobNamespace([{ name: 'x', blob: new Blob([]) }, { name: '/x', blob: new Blob([]) }]), isCode('FILEEXISTS'));
});

test('a chain made in memory opens from blobs of its files, parent found by its hint', async () => {
  const mem = new MemoryNamespace();
  const base = await Disk.create('/base.vhd', { namespace: mem, format: 'vhd', capacity: 8 << 20 });
  await base.write(0, Buffer.alloc(65536, 0x11));
  await base.close();
  const { createChild } = await import('../../src/ops/child.js');
  const child = await createChild('/base.vhd', '/child.vhd', { namespace: mem });
  await child.write(1 << 20, Buffer.alloc(65536, 0x22));
  const want = await checksum(child);
  await child.close();
  const files = [];
  for (const name of mem.names()) {
    const st = await mem.open(name);
    files.push({ name: name.slice(1), blob: new Blob([new Uint8Array(await st.read(0, await st.size()))]) });
    await st.close();
  }
  const ns = new BlobNamespace(files);
  const d = await Disk.open('child.vhd', { namespace: ns, readOnly: true });
  assert.equal(d.links.length, 2);
  assert.equal(await checksum(d), want);
  await d.close();
});
