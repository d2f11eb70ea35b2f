/**
 * The Namespace contract, one test body over the file and the memory namespace, and the pure
 * name helpers (core/names.ts) against node:path's POSIX behaviour.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, posix } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { FileNamespace } from '../../src/storage/file.js';
import { MemoryNamespace } from '../../src/storage/memory.js';
import { readText, sameFile, writeAtomic, refuseUnsafe, type Namespace } from '../../src/storage/namespace.js';
import * as names from '../../src/core/names.js';
import { DiskError } from '../../src/core/errors.js';
import { tmpDir } from '../helpers/tools.js';

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof DiskError && e.code === code);
}

async function contract(ns: Namespace, root: string): Promise<void> {
  const a = names.join(root, 'a.img');
  const b = names.join(root, 'sub', 'b.img');
  assert.equal(await ns.exists(a), false);
  assert.equal(await ns.kind(a), 'missing');
  await rejectsWith(ns.open(a), 'FILENOTFOUND');
  await rejectsWith(ns.stat(a), 'FILENOTFOUND');

  const w = await ns.create(a);
  await w.write(10, Buffer.from('hello'));
  await w.flush();
  await w.close();
  await rejectsWith(ns.create(a), 'FILEEXISTS');
  assert.equal(await ns.exists(a), true);
  assert.equal(await ns.kind(a), 'file');
  const st = await ns.stat(a);
  assert.equal(st.size, 15);
  assert.ok(st.mtimeMs > 0);
  assert.equal(typeof st.id, 'string');

  // read-only opens refuse writes; read-write opens see each other's bytes
  const r = await ns.open(a);
  assert.equal(r.readOnly, true);
  await rejectsWith(r.write(0, Buffer.from('x')), 'RDONLY');
  assert.equal((await r.read(10, 5)).toString(), 'hello');
  const rw = await ns.open(a, { write: true });
  await rw.write(0, Buffer.from('AB'));
  assert.equal((await r.read(0, 2)).toString(), 'AB');
  await rw.close();
  await r.close();

  // overwrite empties
  const o = await ns.create(a, { overwrite: true });
  assert.equal(await o.size(), 0);
  await o.write(0, Buffer.from('again'));
  await o.close();

  // names relative to another name's folder; absolute names stay
  assert.equal(ns.resolve(a, 'sub/b.img'), ns.absolute(b));
  assert.equal(ns.resolve(b, '../a.img'), ns.absolute(a));
  assert.equal(ns.resolve(b, ns.absolute(a)), ns.absolute(a));

  // links, renames, identity
  await ns.create(b).then((s) => s.close());
  assert.equal(await ns.kind(names.join(root, 'sub')), 'dir');
  assert.deepEqual((await ns.list(names.join(root, 'sub'))).sort(), ['b.img']);
  assert.equal(await sameFile(ns, a, b), false);
  const c = names.join(root, 'c.img');
  assert.equal(await ns.link(a, c), true);
  assert.equal(await sameFile(ns, a, c), true);
  assert.equal((await ns.stat(a)).links, 2);
  await ns.rename(c, b); // replaces b
  assert.equal(await ns.exists(c), false);
  assert.equal(await sameFile(ns, a, b), true);
  await ns.remove(b);
  await ns.remove(b); // missing: fine
  assert.equal(await ns.exists(b), false);
  assert.equal((await ns.stat(a)).links, 1);

  await writeAtomic(ns, a, Buffer.from('atomic text'));
  assert.equal(await readText(ns, a, 6), 'atomic');
  assert.deepEqual((await ns.list(root)).filter((n) => n.includes('vdkit-tmp')), []);
  assert.equal(await ns.realName(a), ns.absolute(a));
}

test('FileNamespace keeps the Namespace contract', async (t) => {
  const dir = await tmpDir(t);
  await mkdir(join(dir.path, 'sub')); // a file namespace has real folders; memory folders exist by their names
  await contract(new FileNamespace(), dir.path);
});

test('MemoryNamespace keeps the Namespace contract', async () => {
  const ns = new MemoryNamespace();
  await contract(ns, '/images');
  // relative names are taken from the root
  assert.equal(ns.absolute('x/y.vmdk'), '/x/y.vmdk');
  assert.deepEqual(ns.names(), ['/images/a.img']);
});

test('durable and unsafe file namespaces: stores work, in-place work refuses unsafe', async (t) => {
  const dir = await tmpDir(t);
  for (const mode of ['durable', 'writeback', 'unsafe'] as const) {
    const ns = new FileNamespace({ cacheMode: mode });
    const name = names.join(dir.path, `${mode}.bin`);
    const s = await ns.create(name);
    await s.write(0, Buffer.alloc(4096, 1));
    await s.flush();
    await s.close();
    await ns.rename(name, name + '.2');
    assert.equal((await ns.stat(name + '.2')).size, 4096);
    if (mode === 'unsafe') assert.throws(() => refuseUnsafe(ns, 'compact', name), /cache mode 'unsafe'/);
    else refuseUnsafe(ns, 'compact', name);
  }
  assert.throws(() => refuseUnsafe(new MemoryNamespace({ cacheMode: 'unsafe' }), 'resize', '/m'), (e: unknown) => e instanceof DiskError && e.code === 'NOTSUPPORTED');
});

test('name helpers agree with POSIX paths', () => {
  const cases = ['/a/b/c.vmdk', 'a/b', 'c', '/c', '/', 'a/./b/../c', '../x/y', '/../x', 'a//b/', '.hidden', 'x.tar.gz'];
  for (const c of cases) {
    assert.equal(names.dirname(c), posix.dirname(c), `dirname ${c}`);
    assert.equal(names.basename(c), posix.basename(c), `basename ${c}`);
    assert.equal(names.extname(c), posix.extname(c), `extname ${c}`);
    assert.equal(names.normalize(c), posix.normalize(c).replace(/(.)\/$/, '$1'), `normalize ${c}`);
  }
  assert.equal(names.join('/a', 'b', '../c'), posix.join('/a', 'b', '../c'));
  assert.equal(names.relative('/a/b', '/a/c/d'), posix.relative('/a/b', '/a/c/d'));
  assert.equal(names.relative('/a/b', '/a/b/e'), 'e');
  assert.equal(names.resolveBeside('/a/b/c.vmdk', 'd.vmdk'), '/a/b/d.vmdk');
  assert.equal(names.resolveBeside('/a/b/c.vmdk', '/x/d.vmdk'), '/x/d.vmdk');
  assert.equal(names.basename('disk.vmdk', '.vmdk'), 'disk');
});

test('URL names keep their scheme://authority root when joined and normalized', () => {
  assert.equal(names.join('s3://bucket/imgs', 'child.qcow2'), 's3://bucket/imgs/child.qcow2');
  assert.equal(names.resolveBeside('https://host:8080/d/a.vmdk', 'a-flat.vmdk'), 'https://host:8080/d/a-flat.vmdk');
  assert.equal(names.resolveBeside('https://host/d/a.vmdk', '../p/b.vhd'), 'https://host/p/b.vhd');
  assert.equal(names.normalize('s3://bucket/a/../../x'), 's3://bucket/x', '".." stops at the authority');
  assert.equal(names.normalize('http://h'), 'http://h/');
  assert.ok(names.isAbsolute('s3://b/k') && !names.isAbsolute('b/k'));
  assert.equal(names.dirname('s3://bucket/imgs/x.vmdk'), 's3://bucket/imgs');
});
