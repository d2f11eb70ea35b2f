/**
 * Issue 16 item 3: on the command line the format of a new image follows -f/-O, else the file
 * name's extension (as the drivers declare them), else the command is a usage error naming the
 * choices. Until then `create x.qcow2 1G` and `convert in.qcow2 out.img` made VMDKs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runVdkit } from '../helpers/tools.js';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';


const vdkit = runVdkit;

const exists = (p: string) => access(p).then(() => true, () => false);

test('CLI: create and convert take the format from -f/-O, else the extension, else refuse (exit 2)', async () => {
  const cwd = await mkdtemp(join(tmpdir(), 'vdkit-outfmt-'));
  try {
    const ok = async (args: string[]) => {
      const r = await vdkit(args, cwd);
      assert.equal(r.code, 0, `vdkit ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    const formatOf = async (file: string) => (JSON.parse(await ok(['info', '--json', '--single-link', file])) as { format: string }).format;

    // create: the extension names the format, case ignored
    const byName: [string, string][] = [
      ['a.qcow2', 'qcow2'],
      ['b.vdi', 'vdi'],
      ['c.vhd', 'vhd'],
      ['d.vhdx', 'vhdx'],
      ['e.img', 'raw'],
      ['f.raw', 'raw'],
      ['G.QCOW2', 'qcow2'],
      ['h.vmdk', 'vmdk'],
    ];
    for (const [file] of byName) await ok(['create', file, '1M']);
    for (const [file, format] of byName) assert.equal(await formatOf(file), format, file);

    // -f wins over the name; qemu's names are taken
    await ok(['create', '-f', 'vmdk', 'i.disk', '1M']);
    assert.equal(await formatOf('i.disk'), 'vmdk');
    await ok(['create', '-f', 'vpc', 'j.disk', '1M']);
    assert.equal(await formatOf('j.disk'), 'vhd');

    // a name that names no format: usage error, the choices named, nothing made
    for (const file of ['k.disk', 'noext']) {
      const r = await vdkit(['create', file, '1M'], cwd);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /-f FORMAT/);
      for (const name of ['vmdk (.vmdk)', 'vdi (.vdi)', 'vhd (.vhd', 'vhdx (.vhdx', 'qcow2 (.qcow2', 'raw (.raw']) assert.ok(r.stderr.includes(name), `${name} in ${r.stderr}`);
      assert.equal(await exists(join(cwd, file)), false);
    }

    // create -b: -f, else the name, else the backing file's format
    await ok(['create', '-b', 'b.vdi', 'b-child.vdi']);
    assert.equal(await formatOf('b-child.vdi'), 'vdi');
    await ok(['create', '-b', 'a.qcow2', 'a-overlay']);
    assert.equal(await formatOf('a-overlay'), 'qcow2');
    await ok(['create', '-b', 'h.vmdk', 'h-over.qcow2']);
    assert.equal(await formatOf('h-over.qcow2'), 'qcow2');

    // convert (and its alias clone): -O, else DST's extension, else refuse
    await ok(['convert', 'a.qcow2', 'out.img']);
    assert.equal(await formatOf('out.img'), 'raw');
    await ok(['convert', 'h.vmdk', 'out.qcow2']);
    assert.equal(await formatOf('out.qcow2'), 'qcow2');
    await ok(['clone', 'h.vmdk', 'out.vhdx']);
    assert.equal(await formatOf('out.vhdx'), 'vhdx');
    await ok(['convert', '-O', 'vdi', 'h.vmdk', 'out.disk']);
    assert.equal(await formatOf('out.disk'), 'vdi');
    const r = await vdkit(['convert', 'h.vmdk', 'out2.disk'], cwd);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /-O FORMAT/);
    assert.equal(await exists(join(cwd, 'out2.disk')), false);
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
});
