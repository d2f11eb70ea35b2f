/**
 * A short VirtualBox-style program ported to the VD container (issue 15, Done-when): create a
 * base, create a diff, write, copy the chain into another container keeping it a chain (the
 * "same content from image N" shortcut), merge, copy into the existing chain again, and merge
 * the other way. qemu-img is the oracle: every image passes `qemu-img check`, and each chain
 * compares equal (`qemu-img compare`) with the other and with a raw file of what was written.
 *
 *   VDCreate(A); VDCreateBase(A, "VMDK", a0); VDWrite ...; VDCreateDiff(A, "VMDK", a1); VDWrite ...
 *   VDCreate(B); VDCopyEx(A, 0, B, "QCOW2", b0); VDCopyEx(A, 1, B, "QCOW2", b1, nImageFromSame=0, nImageToSame=0)
 *   VDMerge(A, 1, 0); VDCreateDiff(A, a2); VDWrite ...; VDCopyEx(A, 1, B, NULL, from=0, to=1)
 *   VDMerge(B, 0, 1)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { VDisk, vd } from '../../src/index.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
const pattern = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => ((i >> 9) * 31 + seed) & 0xff || 1));

async function qemuOk(args: string[]): Promise<void> {
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, `qemu-img ${args.join(' ')}: ${r.stdout}${r.stderr}`);
}

test('a VirtualBox-style program: create base, diff, write, copy keeping the chain, merge, copy into the existing chain (qemu-img checks)', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const p = (n: string) => join(dir, n);
  const model = Buffer.alloc(SIZE);
  const A = new VDisk();
  const write = async (offset: number, data: Buffer) => {
    await A.write(offset, data);
    data.copy(model, offset);
  };

  await A.createBase('vmdk', p('a0.vmdk'), SIZE, { comment: 'base' });
  await write(0, pattern(2 * MiB, 1));
  await write(9 * MiB, pattern(MiB, 2));
  await A.createDiff('vmdk', p('a1.vmdk'));
  await write(MiB + 512, pattern(300 * 1024, 3));
  await write(9 * MiB, Buffer.alloc(128 * 1024)); // zeros hiding the base's data
  await write(14 * MiB, pattern(64 * 1024, 4));
  assert.deepEqual(await A.read(0, SIZE), model);

  // copy the chain link by link into another container, in another format
  const B = new VDisk();
  const base = await A.copyEx(0, B, { path: p('b0.qcow2'), format: 'qcow2' });
  assert.equal(B.getCount(), 1);
  const diff = await A.copyEx(1, B, { path: p('b1.qcow2'), format: 'qcow2', fromSame: 0, toSame: 0 });
  assert.equal(B.getCount(), 2);
  assert.ok(diff.bytesWritten < 2 * MiB && diff.bytesWritten >= 300 * 1024 + 128 * 1024 + 64 * 1024, `only what image 1 holds is copied (${diff.bytesWritten} bytes)`);
  assert.ok(base.bytesWritten >= 3 * MiB);
  assert.equal(await B.getImageFlags(1), vd.VD_IMAGE_FLAGS_DIFF);
  assert.deepEqual(await B.read(0, SIZE), model);

  // VDMerge child -> parent: a1 into a0, a1 deleted
  await A.merge(1, 0);
  assert.equal(A.getCount(), 1);
  assert.equal(existsSync(p('a1.vmdk')), false);
  assert.deepEqual(await A.read(0, SIZE), model);

  // new writes in A, then copied into B's existing top: A's image 0 now reads as B's image 1
  await A.createDiff('vmdk', p('a2.vmdk'));
  await write(4 * MiB, pattern(200 * 1024, 5));
  await write(0, pattern(4096, 6));
  const into = await A.copyEx(1, B, { fromSame: 0, toSame: 1 });
  assert.equal(B.getCount(), 2, 'no new image: the copy went into the top');
  assert.ok(into.bytesWritten < MiB, `only a2's ranges (${into.bytesWritten} bytes)`);
  assert.deepEqual(await B.read(0, SIZE), model);

  // and without the shortcut: every range compared, only the differences written
  await write(12 * MiB, pattern(8192, 7));
  const full = await A.copyEx(1, B);
  assert.ok(full.bytesWritten > 0 && full.bytesWritten <= 2 * MiB, `${full.bytesWritten} bytes written`);
  assert.deepEqual(await B.read(0, SIZE), model);
  await A.closeAll();
  await B.closeAll();

  await writeFile(p('model.raw'), model);
  for (const [f, fmt] of [['a0.vmdk', 'vmdk'], ['a2.vmdk', 'vmdk'], ['b0.qcow2', 'qcow2'], ['b1.qcow2', 'qcow2']] as const) await qemuOk(['check', '-f', fmt, p(f)]);
  await qemuOk(['compare', '-f', 'vmdk', '-F', 'qcow2', p('a2.vmdk'), p('b1.qcow2')]);
  await qemuOk(['compare', '-f', 'qcow2', '-F', 'raw', p('b1.qcow2'), p('model.raw')]);

  // VDMerge parent -> child in B: b0 into b1, which becomes a base
  const B2 = new VDisk();
  await B2.open('qcow2', p('b0.qcow2'), vd.VD_OPEN_FLAGS_READONLY);
  await B2.open('qcow2', p('b1.qcow2'));
  await B2.merge(0, 1);
  assert.equal(B2.getCount(), 1);
  assert.equal(await B2.getImageFlags(0), vd.VD_IMAGE_FLAGS_NONE);
  assert.equal(existsSync(p('b0.qcow2')), false);
  await B2.closeAll();
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', p('b1.qcow2')])).stdout) as { 'backing-filename'?: string };
  assert.equal(info['backing-filename'], undefined, 'b1 stands alone');
  await qemuOk(['check', '-f', 'qcow2', p('b1.qcow2')]);
  await qemuOk(['compare', '-f', 'qcow2', '-F', 'raw', p('b1.qcow2'), p('model.raw')]);
});

test('VDMerge of a middle image into its parent re-points the image above it (VMDK and VDI chains of three)', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  for (const format of ['vmdk', 'vdi'] as const) {
    const dir = (await tmpDir(t)).path;
    const p = (n: string) => join(dir, `${n}.${format}`);
    const model = Buffer.alloc(8 * MiB);
    const c = new VDisk();
    const write = async (offset: number, data: Buffer) => {
      await c.write(offset, data);
      data.copy(model, offset);
    };
    await c.createBase(format, p('x0'), model.length);
    await write(0, pattern(3 * MiB, 11));
    await c.createDiff(undefined, p('x1'));
    await write(MiB, pattern(MiB, 12));
    await c.createDiff(undefined, p('x2'));
    await write(2 * MiB + 4096, pattern(8192, 13));
    await c.merge(1, 0);
    assert.equal(c.getCount(), 2, format);
    assert.equal(existsSync(p('x1')), false);
    if (format === 'vdi') assert.equal(await c.getParentUuid(1), await c.getUuid(0), 'x2 now names x0');
    assert.deepEqual(await c.read(0, model.length), model, `${format}: reads the same after the merge`);
    await c.write(7 * MiB, pattern(512, 14)); // the top is still writable
    pattern(512, 14).copy(model, 7 * MiB);
    await c.closeAll();
    // opened again from the files alone
    const again = new VDisk();
    await again.open(format, p('x0'), vd.VD_OPEN_FLAGS_READONLY);
    await again.open(format, p('x2'));
    assert.deepEqual(await again.read(0, model.length), model);
    await again.closeAll();
    if (format === 'vmdk') {
      await writeFile(join(dir, 'model.raw'), model);
      await qemuOk(['check', '-f', 'vmdk', p('x2')]);
      await qemuOk(['compare', '-f', 'vmdk', '-F', 'raw', p('x2'), join(dir, 'model.raw')]);
    }
  }
});

test('VDMerge of parents into a middle image keeps the image above it valid (qcow2 chain of three)', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const p = (n: string) => join(dir, `${n}.qcow2`);
  const model = Buffer.alloc(8 * MiB);
  const c = new VDisk();
  const write = async (offset: number, data: Buffer) => {
    await c.write(offset, data);
    data.copy(model, offset);
  };
  await c.createBase('qcow2', p('y0'), model.length);
  await write(0, pattern(2 * MiB, 21));
  await c.createDiff(undefined, p('y1'));
  await write(MiB, pattern(512 * 1024, 22));
  await c.createDiff(undefined, p('y2'));
  await write(3 * MiB, pattern(65536, 23));
  // y0 into y1, which has a child of its own in the container (y2)
  await c.merge(0, 1);
  assert.equal(c.getCount(), 2);
  assert.equal(existsSync(p('y0')), false);
  assert.equal(await c.getImageFlags(0), vd.VD_IMAGE_FLAGS_NONE);
  assert.deepEqual(await c.read(0, model.length), model);
  await c.closeAll();
  await writeFile(join(dir, 'model.raw'), model);
  await qemuOk(['check', '-f', 'qcow2', p('y1')]);
  await qemuOk(['check', '-f', 'qcow2', p('y2')]);
  await qemuOk(['compare', '-f', 'qcow2', '-F', 'raw', p('y2'), join(dir, 'model.raw')]);
});
