/** `vdkit info`: what a disk is (VixDiskLib_GetInfo, qemu-img info). */
import { diskCommand } from '../command.js';
import { json, opt, readingOptions } from '../options.js';
import type { DiskInfo } from '../../formats/types.js';
import type { Namespace } from '../../storage/namespace.js';
import { formatInfo, formatProperties, out } from '../output.js';

/**
 * Whether the image could not be opened for writing: its format or type is written only in one
 * pass (streamOptimized) or not at all, or one of its files is not writable by this user. Info
 * opens every image read-only, so DiskInfo.readOnly cannot tell.
 */
async function cannotWrite(info: DiskInfo, ns: Namespace): Promise<boolean> {
  // the driver's, not the image's: a read-only open reports write 'none' for every image
  const { driverByName } = await import('../../formats/registry.js');
  const driver = driverByName(info.format);
  if (driver.capabilities.write === 'none' || driver.sequentialTypes.includes(info.type)) return true;
  // through the namespace (only storage/ touches the file system): an open for writing that
  // is closed at once changes nothing
  for (const f of info.files) {
    const st = await ns.open(f, { write: true }).catch(() => undefined);
    if (!st) return true;
    await st.close();
  }
  return false;
}

export const info = diskCommand({
  name: 'info',
  summary: 'show what a disk is (VixDiskLib_GetInfo, qemu-img info)',
  options: [
    ...readingOptions(),
    json(),
    opt('--output <fmt>', "human (default) or json: qemu-img info's JSON keys (virtual-size, format-specific, ...)"),
    opt('--backing-chain', 'show every link of the chain, top first (JSON: an array, as qemu-img prints it)'),
    opt('--descriptor', 'VMDK: also print the descriptor text'),
    opt('--no-chain', 'inspect this image alone: its parent is not looked for or checked (VD_OPEN_FLAGS_INFO)'),
  ],
  readOnly: true,
  parse: async (o) => (await import('../qemu-output.js')).outputFormat(o.output),
  openOptions: ({ o }) => ({ infoOnly: o.chain === false }),
  async run(d, { o, file, p: output }) {
    if (output === 'json') {
      const { qemuInfo, qemuJson } = await import('../qemu-output.js');
      const { driverByName } = await import('../../formats/registry.js');
      const links = await qemuInfo(d, file, !!o.backingChain, driverByName);
      await out(qemuJson(o.backingChain ? links : links[0]));
      return;
    }
    if (o.backingChain) {
      // one block per link, top first, each as `vdkit info` prints that image alone
      const blocks: string[] = [];
      for (const link of d.links) {
        const i = await link.info();
        blocks.push(formatInfo(i, { cannotWrite: await cannotWrite(i, d.image.namespace) }));
      }
      await out(blocks.join('\n'));
      return;
    }
    const info = await d.info();
    const properties = d.getProperties();
    if (o.json) await out(JSON.stringify({ ...info, path: file, properties }, (_k, v) => (v === undefined ? null : v), 2) + '\n');
    else await out(formatInfo(info, { cannotWrite: await cannotWrite(info, d.image.namespace) }) + formatProperties(properties));
    if (o.descriptor && 'descriptorText' in d.image) await out('\n' + (d.image as { descriptorText(): string }).descriptorText());
  },
});
