/** `vdkit info`: what a disk is (VixDiskLib_GetInfo, qemu-img info). */
import { diskCommand } from '../command.js';
import { json, opt, readingOptions } from '../options.js';
import { formatInfo, formatProperties, out } from '../output.js';

export const info = diskCommand({
  name: 'info',
  summary: 'show what a disk is (VixDiskLib_GetInfo, qemu-img info)',
  options: [...readingOptions(), json(), opt('--descriptor', 'VMDK: also print the descriptor text'), opt('--no-chain', 'inspect this image alone: its parent is not looked for or checked (VD_OPEN_FLAGS_INFO)')],
  readOnly: true,
  openOptions: ({ o }) => ({ infoOnly: o.chain === false }),
  async run(d, { o, file }) {
    const info = await d.info();
    const properties = d.getProperties();
    if (o.json) await out(JSON.stringify({ ...info, path: file, properties }, (_k, v) => (v === undefined ? null : v), 2) + '\n');
    else await out(formatInfo(info) + formatProperties(properties));
    if (o.descriptor && 'descriptorText' in d.image) await out('\n' + (d.image as { descriptorText(): string }).descriptorText());
  },
});
