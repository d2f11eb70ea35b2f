/**
 * `npm start`: a short tour of the main job in a temporary folder. Each step is printed as the
 * command a user would type, followed by what vdkit prints.
 */
import { makeHostTempFolder, removeHostFolder } from '../storage/file.js';
import { Disk } from '../disk.js';
import { main } from './main.js';

async function step(args: string[], note?: string): Promise<void> {
  if (note) process.stdout.write(`\n# ${note}\n`);
  process.stdout.write(`$ vdkit ${args.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' ')}\n`);
  const code = await main(args);
  if (code !== 0) throw new Error(`vdkit ${args.join(' ')} exited with ${code}`);
}

export async function tour(): Promise<void> {
  const dir = await makeHostTempFolder('vdkit-tour-');
  const cwd = process.cwd();
  process.chdir(dir);
  try {
    process.stdout.write(`vdkit tour in ${dir}\n`);
    await step(['create', 'sparse.vmdk', '1G'], 'a growable single-file disk (monolithicSparse, the default)');
    await step(['create', '-t', 'twoGbMaxExtentSparse', '-a', 'ide', 'split.vmdk', '5G'], 'a disk split into 2 GB extents, IDE adapter');
    await step(['create', '-t', 'monolithicFlat', 'flat.vmdk', '64M'], 'a preallocated disk: descriptor + flat-flat.vmdk');
    await step(['create', '-t', 'vmfs', '--thin', 'esx.vmdk', '2G'], 'an ESXi-style disk (vmfs, thin)');

    await step(['fill', '--start', '0', '--count', '2', '--value', '0x41', 'sparse.vmdk'], 'write: fill the first two sectors with "A" (the VDDK sample\'s -fill)');
    // bytes across the 2 GB extent boundary of the split disk, through the library API
    const d = await Disk.open('split.vmdk');
    const msg = Buffer.from('hello from vdkit, across an extent boundary');
    const at = 4192256 * 512 - 16;
    await d.write(at, msg);
    await d.close();
    process.stdout.write(`\n# (library) Disk.open('split.vmdk').write(${at}, "${msg}")\n`);
    await step(['read', '--offset', String(at), '--length', '64', '--hex', 'split.vmdk'], 'read it back as a hex dump');
    await step(['read', '--offset', '0', '--length', '32', '--hex', 'sparse.vmdk']);

    await step(['meta', 'sparse.vmdk'], 'the disk database (VixDiskLib metadata)');
    await step(['meta', 'sparse.vmdk', 'toolsVersion', '12352'], 'set a key');
    await step(['map', 'sparse.vmdk'], 'which ranges hold data');
    await step(['info', 'split.vmdk'], 'what a disk is');
    await step(['convert', '-O', 'vmdk', '-t', 'monolithicFlat', 'sparse.vmdk', 'copy.vmdk'], 'convert to another type; only data is copied');
    await step(['child', 'sparse.vmdk'], 'a redo log: sparse-000001.vmdk records changes, sparse.vmdk stays as it was');
    await step(['fill', '--start', '1', '--count', '1', '--value', '0x42', 'sparse-000001.vmdk']);
    await step(['read', '--offset', '496', '--length', '32', '--hex', 'sparse-000001.vmdk'], 'the child reads its parent\'s sector 0 and its own sector 1');
    await step(['chain', 'sparse-000001.vmdk'], 'the chain, top first');
    await step(['commit', 'sparse-000001.vmdk'], 'fold the redo log back into its parent');
    await step(['info', '--json', 'copy.vmdk'], 'machine-readable info');
    process.stdout.write(`\ntour done; removing ${dir}\n`);
  } finally {
    process.chdir(cwd);
    await removeHostFolder(dir);
  }
}
