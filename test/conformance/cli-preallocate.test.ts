/**
 * Issue 16 item 7: create options are done or refused, never dropped. Until then
 * `create -f qcow2 -o preallocation=metadata` made a sparse file, `create -f vdi --preallocate`
 * a dynamic VDI, `-f raw --preallocate` a sparse file, and -a/--hw/... with -b were dropped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runVdkit } from '../helpers/tools.js';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const MiB = 1024 * 1024;

const vdkit = runVdkit;

test('CLI create: preallocation is done (raw, fixed, flat) or refused (metadata, types that grow, options a child cannot take)', async () => {
  const cwd = await mkdtemp(join(tmpdir(), 'vdkit-prealloc-'));
  try {
    const ok = async (args: string[]) => {
      const r = await vdkit(args, cwd);
      assert.equal(r.code, 0, `vdkit ${args.join(' ')}: ${r.stderr}`);
    };
    const refused = async (args: string[], code: number, message: RegExp) => {
      const r = await vdkit(args, cwd);
      assert.equal(r.code, code, `vdkit ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, `vdkit ${args.join(' ')}`);
    };
    const allocated = async (file: string) => (await stat(join(cwd, file))).blocks * 512;

    // done: the zeros are on the disk
    await ok(['create', '-f', 'raw', '--preallocate', 'r.img', '4M']);
    assert.ok((await allocated('r.img')) >= 4 * MiB, 'raw --preallocate writes the zeros');
    await ok(['create', '-o', 'preallocation=full', 'full.raw', '4M']);
    assert.ok((await allocated('full.raw')) >= 4 * MiB, 'raw -o preallocation=full writes the zeros');
    await ok(['create', '-f', 'vdi', '-t', 'fixed', '--preallocate', 'f.vdi', '4M']);
    assert.ok((await allocated('f.vdi')) >= 4 * MiB, 'fixed VDI --preallocate writes the zeros');
    await ok(['create', '-o', 'preallocation=off', 'off.raw', '4M']);
    assert.ok((await allocated('off.raw')) < MiB, 'preallocation=off stays sparse');

    // refused, nothing made
    await refused(['create', '-f', 'qcow2', '-o', 'preallocation=metadata', 'm.qcow2', '4M'], 2, /preallocation=metadata: refused/);
    await refused(['create', '-f', 'qcow2', '-o', 'preallocation=full', 'q.qcow2', '4M'], 1, /qcow2 preallocation is not supported/);
    await refused(['create', '-f', 'vdi', '--preallocate', 'd.vdi', '4M'], 1, /VDI dynamic images grow as they are written; only fixed/);
    await refused(['create', '-f', 'vhd', '--preallocate', 'd.vhd', '4M'], 1, /VHD dynamic images grow/);
    await refused(['create', '-f', 'vhdx', '--preallocate', 'd.vhdx', '4M'], 1, /VHDX dynamic images grow/);
    await refused(['create', '--preallocate', 'd.vmdk', '4M'], 1, /VMDK monolithicSparse images grow.*monolithicFlat/);
    await ok(['create', 'base.vmdk', '4M']);
    await refused(['create', '-b', 'base.vmdk', '-a', 'ide', '--hw', '7', 'child.vmdk'], 2, /-a, --hw: not with -b/);
    await refused(['create', '-b', 'base.vmdk', '--preallocate', 'child.vmdk'], 2, /--preallocate: not with -b/);
    const left = (await readdir(cwd)).sort();
    assert.deepEqual(left, ['base.vmdk', 'f.vdi', 'full.raw', 'off.raw', 'r.img'], 'refused runs leave no file');
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
});
