/**
 * `vdkit stat IMAGE[:PART] PATH`: one file's metadata as stat(1) prints it (times in UTC with
 * their nanoseconds, owners as numbers), or with --json the object `vdkit ls --json` gives per
 * entry. lstat unless -L, like stat(1).
 */
import type { CliCommand } from '../command.js';
import { json, opt, readingOptions, withOptions } from '../options.js';
import { out } from '../output.js';
import type { FsStat, FsTime } from '../../inside/fs/types.js';

/** stat(1)'s %F */
function typeName(st: FsStat): string {
  switch (st.type) {
    case 'file':
      return st.size === 0 ? 'regular empty file' : 'regular file';
    case 'dir':
      return 'directory';
    case 'symlink':
      return 'symbolic link';
    case 'chardev':
      return 'character special file';
    case 'blockdev':
      return 'block special file';
    case 'fifo':
      return 'fifo';
    case 'socket':
      return 'socket';
    default:
      return 'unknown';
  }
}

/** `2021-03-04 15:47:36.000000000 +0000`, stat(1)'s form, in UTC */
function statTime(t: FsTime | undefined, timeText: (t: FsTime) => string): string {
  if (!t) return '-';
  return timeText(t).replace('T', ' ').replace(/Z$/, ' +0000');
}

export const stat: CliCommand = {
  name: 'stat',
  summary: 'show one file\'s metadata like stat(1) (IMAGE[:PART] PATH), read-only',
  define: (cmd) =>
    withOptions(cmd, [...readingOptions(), opt('-L, --dereference', 'follow a symbolic link in the last component'), json('the fields as one JSON object (as ls --json gives them)')])
      .argument('<image>', 'the disk image, or IMAGE:PART for one partition or volume')
      .argument('<path>', 'the file or directory in the filesystem')
      .action(async (image: string, path: string, o) => {
        const { withFilesystem } = await import('../inside-target.js');
        const { modeText, timeText } = await import('./ls.js');
        await withFilesystem(image, o, async (fs) => {
          const st = await fs.stat(path, { follow: o.dereference === true });
          const target = st.type === 'symlink' ? await fs.readlinkIno(st.ino) : undefined;
          const mode = modeText(st.type, st.mode);
          if (o.json) {
            const obj = {
              path,
              ino: st.ino,
              type: st.type,
              mode: st.mode,
              modeText: mode,
              uid: st.uid,
              gid: st.gid,
              size: st.size,
              nlink: st.nlink,
              ...(st.allocated !== undefined ? { allocated: st.allocated } : {}),
              mtime: timeText(st.mtime),
              atime: timeText(st.atime),
              ctime: timeText(st.ctime),
              ...(st.crtime ? { crtime: timeText(st.crtime) } : {}),
              ...(st.rdev ? { rdev: st.rdev } : {}),
              ...(target !== undefined ? { target } : {}),
              filesystem: fs.statfs().type,
            };
            await out(JSON.stringify(obj, null, 2) + '\n');
            return;
          }
          const blocks = st.allocated !== undefined ? String(Math.ceil(st.allocated / 512)) : '-';
          const dev = st.rdev ? `Device type: ${st.rdev.major},${st.rdev.minor}` : '';
          const lines = [
            `  File: ${target !== undefined ? `${path} -> ${target}` : path}`,
            `  Size: ${String(st.size).padEnd(10)}\tBlocks: ${blocks.padEnd(10)} IO Block: ${String(fs.statfs().blockSize).padEnd(6)} ${typeName(st)}`,
            `Device: ${fs.statfs().type}\tInode: ${String(st.ino).padEnd(11)} Links: ${st.nlink}${dev ? `\t${dev}` : ''}`,
            `Access: (${(st.mode & 0o7777).toString(8).padStart(4, '0')}/${mode})  Uid: (${String(st.uid).padStart(5)})   Gid: (${String(st.gid).padStart(5)})`,
            `Access: ${statTime(st.atime, timeText)}`,
            `Modify: ${statTime(st.mtime, timeText)}`,
            `Change: ${statTime(st.ctime, timeText)}`,
            ` Birth: ${statTime(st.crtime, timeText)}`,
          ];
          await out(lines.join('\n') + '\n');
        });
      }),
};
