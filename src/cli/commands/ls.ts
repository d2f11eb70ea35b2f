/**
 * `vdkit ls IMAGE[:PART] [PATH]`: the files in a disk's filesystem, read-only, without mounting
 * (virt-ls, fls). Names are sorted by their bytes (ls in the C locale); -l adds mode, links,
 * owner, size and mtime (UTC); -R walks subdirectories (each directory once, whatever its links
 * say); --json prints one object per entry with its full path and every stat field.
 */
import type { CliCommand } from '../command.js';
import { json, opt, readingOptions, withOptions } from '../options.js';
import { out } from '../output.js';
import type { Filesystem, FsStat, FsTime } from '../../inside/fs/types.js';

const TYPE_CHAR: Record<FsStat['type'], string> = { file: '-', dir: 'd', symlink: 'l', chardev: 'c', blockdev: 'b', fifo: 'p', socket: 's', unknown: '?' };

/** `drwxr-xr-x` with s/S, t/T as ls prints setuid, setgid and sticky */
export function modeText(type: FsStat['type'], mode: number): string {
  const rwx = (bits: number, special: boolean, ch: string) =>
    (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + (special ? (bits & 1 ? ch : ch.toUpperCase()) : bits & 1 ? 'x' : '-');
  return TYPE_CHAR[type] + rwx(mode >> 6, (mode & 0o4000) !== 0, 's') + rwx(mode >> 3, (mode & 0o2000) !== 0, 's') + rwx(mode, (mode & 0o1000) !== 0, 't');
}

/** ISO 8601 in UTC with the nanoseconds the filesystem keeps */
export function timeText(t: FsTime): string {
  const d = new Date(t.sec * 1000);
  if (Number.isNaN(d.getTime())) return `@${t.sec}.${String(t.nsec).padStart(9, '0')}`;
  return d.toISOString().replace(/\.\d{3}Z$/, `.${String(t.nsec).padStart(9, '0')}Z`);
}

const byBytes = (a: { name: string }, b: { name: string }) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name));
const join = (dir: string, name: string) => (dir === '/' ? `/${name}` : `${dir}/${name}`);

interface Row {
  path: string;
  name: string;
  stat: FsStat;
  target?: string;
}

async function rowOf(fs: Filesystem, path: string, name: string, stat: FsStat): Promise<Row> {
  return { path, name, stat, ...(stat.type === 'symlink' ? { target: await fs.readlinkIno(stat.ino) } : {}) };
}

function longLines(rows: readonly Row[]): string[] {
  const cells = rows.map((r) => [
    modeText(r.stat.type, r.stat.mode),
    String(r.stat.nlink),
    String(r.stat.uid),
    String(r.stat.gid),
    r.stat.rdev ? `${r.stat.rdev.major}, ${r.stat.rdev.minor}` : String(r.stat.size),
    timeText(r.stat.mtime).replace('T', ' ').replace(/\.\d+Z$/, ''),
    r.target !== undefined ? `${r.name} -> ${r.target}` : r.name,
  ]);
  const width = (i: number) => Math.max(0, ...cells.map((c) => c[i]!.length));
  const w = [0, 1, 2, 3, 4].map(width);
  return cells.map((c) => `${c[0]} ${c[1]!.padStart(w[1]!)} ${c[2]!.padEnd(w[2]!)} ${c[3]!.padEnd(w[3]!)} ${c[4]!.padStart(w[4]!)} ${c[5]} ${c[6]}`);
}

export const ls: CliCommand = {
  name: 'ls',
  summary: 'list files in the disk\'s filesystem (IMAGE[:PART] [PATH]; ext2/3/4, FAT12/16/32), read-only',
  define: (cmd) =>
    withOptions(cmd, [...readingOptions(), opt('-l, --long', 'mode, links, owner, size and mtime (UTC)'), opt('-R, --recursive', 'list subdirectories too'), json('one JSON object per entry, with every stat field')])
      .argument('<image>', 'the disk image, or IMAGE:PART for one partition or volume')
      .argument('[path]', 'a directory or file in the filesystem', '/')
      .action(async (image: string, path: string, o) => {
        const { withFilesystem } = await import('../inside-target.js');
        await withFilesystem(image, o, async (fs) => {
          const top = await fs.stat(path, { follow: true });
          const rows: Row[] = [];
          const text: string[] = [];
          const seen = new Set<number>();
          const list = async (dir: string, ino: number, header: boolean): Promise<void> => {
            seen.add(ino);
            const entries = (await fs.readdirIno(ino)).sort(byBytes);
            const here: Row[] = [];
            for (const e of entries) {
              const p = join(dir, e.name);
              here.push(o.long || o.json ? await rowOf(fs, p, e.name, await fs.statIno(e.ino)) : { path: p, name: e.name, stat: { ino: e.ino, type: e.type } as FsStat });
            }
            rows.push(...here);
            if (!o.json) {
              if (header) text.push(`${dir}:`);
              text.push(...(o.long ? longLines(here) : here.map((r) => r.name)));
            }
            if (!o.recursive) return;
            for (const r of here) {
              if (r.stat.type !== 'dir' || seen.has(r.stat.ino)) continue;
              if (!o.json) text.push('');
              await list(r.path, r.stat.ino, true);
            }
          };
          if (top.type === 'dir') await list(path === '' ? '/' : path, top.ino, o.recursive === true);
          else {
            const name = path.split('/').filter(Boolean).pop() ?? path;
            const r = await rowOf(fs, path, name, await fs.stat(path));
            rows.push(r);
            text.push(...(o.long ? longLines([r]) : [path]));
          }
          if (o.json) {
            const objects = rows.map((r) => ({
              path: r.path,
              name: r.name,
              ino: r.stat.ino,
              type: r.stat.type,
              mode: r.stat.mode,
              modeText: modeText(r.stat.type, r.stat.mode),
              uid: r.stat.uid,
              gid: r.stat.gid,
              size: r.stat.size,
              nlink: r.stat.nlink,
              mtime: timeText(r.stat.mtime),
              atime: timeText(r.stat.atime),
              ctime: timeText(r.stat.ctime),
              ...(r.stat.crtime ? { crtime: timeText(r.stat.crtime) } : {}),
              ...(r.stat.rdev ? { rdev: r.stat.rdev } : {}),
              ...(r.target !== undefined ? { target: r.target } : {}),
            }));
            await out(JSON.stringify(objects, null, 2) + '\n');
          } else if (text.length > 0) await out(text.join('\n') + '\n');
        });
      }),
};
