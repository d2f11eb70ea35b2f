/** `vdkit cat IMAGE[:PART] PATH`: a file of the disk's filesystem to stdout (symlinks followed), read-only. */
import { DiskError } from '../../core/errors.js';
import type { CliCommand } from '../command.js';
import { readingOptions, withOptions } from '../options.js';
import { out } from '../output.js';

/** bytes per read: large enough to stream fast, small enough to keep memory flat */
const CHUNK = 4 * 1024 * 1024;

export const cat: CliCommand = {
  name: 'cat',
  summary: 'write a file of the disk\'s filesystem to stdout (IMAGE[:PART] PATH; ext2/3/4, FAT12/16/32), read-only',
  define: (cmd) =>
    withOptions(cmd, readingOptions())
      .argument('<image>', 'the disk image, or IMAGE:PART for one partition or volume')
      .argument('<path>', 'the file in the filesystem')
      .action(async (image: string, path: string, o) => {
        const { withFilesystem } = await import('../inside-target.js');
        await withFilesystem(image, o, async (fs) => {
          const st = await fs.stat(path, { follow: true });
          if (st.type === 'dir') throw new DiskError('INVAL', 'is a directory', { path });
          for (let at = 0; at < st.size; at += CHUNK) await out(await fs.readIno(st.ino, at, Math.min(CHUNK, st.size - at)));
        });
      }),
};
