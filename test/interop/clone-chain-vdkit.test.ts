/**
 * Chain-keeping clone of chains vdkit makes (VMDK, VHD, VHDX, VDI) into every format with
 * children, checked as clone-chain.test.ts describes; refusals; cleanup after a killed clone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Disk, DiskError, chainLinkNames, cloneChain } from '../../src/index.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, seedOf } from './support.js';
import { TARGETS, cloneAndCheck, sameContent, vdkitChain } from './clone-chain-support.js';

for (const format of ['vmdk', 'vhd', 'vhdx', 'vdi']) {
  test(`keep-chain: a ${format} chain made by vdkit, cloned into every format with children`, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'vhdiinfo')) return;
    const dir = (await tmpDir(t)).path;
    const src = await vdkitChain(dir, format, seedOf(t.name));
    for (const f of TARGETS) await cloneAndCheck(t, dir, src, f, `vdkit-${format}`);
  });
}

test('keep-chain refusals: no children in the format, names taken, names of the source', async (t) => {
  const dir = (await tmpDir(t)).path;
  const src = await vdkitChain(dir, 'vmdk', 7);
  await assert.rejects(cloneChain(src.top, join(dir, 'x.img'), { format: 'raw' }), (e: unknown) => e instanceof DiskError && e.code === 'NOTSUPPORTED' && /raw/.test(e.message));
  // a lower link's name taken: refused before anything is written
  const taken = chainLinkNames(join(dir, 'y.vmdk'), 3)[0]!;
  await (await Disk.create(taken, { capacity: MiB })).close();
  await assert.rejects(cloneChain(src.top, join(dir, 'y.vmdk'), { format: 'vmdk' }), (e: unknown) => e instanceof DiskError && e.code === 'FILEEXISTS' && e.details.path === taken);
  assert.equal((await readdir(dir)).some((x) => x.startsWith('y.') || x.includes('vdkit-partial')), false, 'nothing written');
  // overwrite replaces it
  const r = await cloneChain(src.top, join(dir, 'y.vmdk'), { format: 'vmdk', overwrite: true });
  await sameContent(r.links[2]!, src.top, 'overwritten');
  // the new chain may never replace a file of the source chain, even with overwrite: the
  // source's base is d-base.vmdk, the base of a clone to d.vmdk
  await assert.rejects(cloneChain(src.top, join(dir, 'd.vmdk'), { format: 'vmdk', overwrite: true }), (e: unknown) => e instanceof DiskError && e.code === 'INVAL');
  await sameContent(src.top, src.raw, 'the source is untouched');
});

test('keep-chain: a clone killed during its renames is cleaned up by the next one (its record names what it renamed)', async (t) => {
  const dir = (await tmpDir(t)).path;
  const src = await vdkitChain(dir, 'vdi', 11);
  // a process that ran and is gone: its pid marks the leftovers as stale
  const gone = await run(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  const pid = Number(gone.stdout);
  assert.ok(Number.isSafeInteger(pid) && pid > 0, 'a pid');
  const dst = join(dir, 'k.vdi');
  // what a clone killed after renaming its base and middle link leaves: the two lower links at
  // their final names, the top still under its temporary name, the record
  const first = await cloneChain(src.top, join(dir, 'tmp.vdi'), { format: 'vdi' });
  const finals = chainLinkNames(resolve(dst), 3);
  await rename(first.links[0]!, finals[0]!);
  await rename(first.links[1]!, finals[1]!);
  await rename(first.links[2]!, join(dir, `.k.vdkit-partial-${pid}.vdi`));
  await writeFile(join(dir, `.k.vdkit-partial-${pid}.chain`), JSON.stringify({ version: 1, links: finals, mayBeInPlace: finals.slice(0, 2) }));
  // and an unrelated disk at a name such a record might list, not renamed by it: kept
  const other = join(dir, 'k-base-000002.vdi');
  await (await Disk.create(other, { format: 'vdi', capacity: MiB })).close();
  // the next clone to that name, with only two links (other names than the killed one's top three)
  const r = await cloneChain(src.top, dst, { format: 'vdi', from: 1 });
  assert.deepEqual(r.links, chainLinkNames(resolve(dst), 2));
  const names = (await readdir(dir)).filter((x) => x.startsWith('k') || x.startsWith('.k'));
  assert.deepEqual(names.sort(), ['k-base-000002.vdi', 'k-base.vdi', 'k.vdi'], 'the stale links, temporary top and record are gone');
  await sameContent(dst, src.top, 'the new clone');
  // a record whose top did get renamed (only its removal was lost): its links are in use, kept
  await writeFile(join(dir, `.k.vdkit-partial-${pid}.chain`), JSON.stringify({ version: 1, links: r.links, mayBeInPlace: r.links.slice(0, 1) }));
  await cloneChain(src.top, join(dir, 'k2.vdi'), { format: 'vdi' }); // other name: does not look at k's records
  assert.ok((await readdir(dir)).includes(`.k.vdkit-partial-${pid}.chain`));
  // a clone to k.vdi that cleans up and is then cancelled: the record goes, the links stay
  const cancelled = cloneChain(src.top, dst, { format: 'vdi', overwrite: true, signal: AbortSignal.abort() });
  await assert.rejects(cancelled, (e: unknown) => e instanceof DiskError && e.code === 'CANCELLED');
  assert.equal((await readdir(dir)).some((x) => x.includes('vdkit-partial')), false, 'record and temporary files gone');
  await sameContent(dst, src.top, 'the chain at k.vdi is still whole');
});
