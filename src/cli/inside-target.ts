/**
 * `IMAGE[:PART]` for the commands that look inside a disk (ls, cat): the one place that splits
 * the argument and turns it into a filesystem. Without PART the whole disk is the filesystem;
 * PART (a partition number, an LVM `vg/lv` or a label) is resolved by volumeOf() through the
 * partition reader (inside/volumes.ts). Imports nothing heavy at load time (command
 * modules import this; the disk and the readers load inside the action).
 */
import { DiskError } from '../core/errors.js';
import type { Disk } from '../disk.js';
import type { Filesystem, FsSource } from '../inside/fs/types.js';
import { openOpts } from './options.js';

export interface ImageTarget {
  readonly image: string;
  readonly part?: string;
}

/** a name with a scheme: the colons up to the first '/' after `://` are the URL's (host:port) */
const URL_HEAD = /^[a-z][a-z0-9+.-]*:\/\/[^/]*/i;

/**
 * Split `IMAGE[:PART]` at the last colon, when what follows is a plausible PART (a number, a
 * `vg/lv`, or a label without '/' or ':' beyond that) and the colon is not part of a URL's host
 * and port or a Windows drive letter (withFilesystem lets an existing file named `a:b` win).
 */
export function splitImagePart(arg: string): ImageTarget {
  const at = arg.lastIndexOf(':');
  if (at <= 0 || at === arg.length - 1) return { image: arg };
  const head = URL_HEAD.exec(arg);
  if (head && at < head[0].length) return { image: arg };
  if (at === 1 && /^[a-z]$/i.test(arg[0]!)) return { image: arg };
  const part = arg.slice(at + 1);
  if (!/^[^/:]+(\/[^/:]+)?$/.test(part)) return { image: arg };
  return { image: arg.slice(0, at), part };
}

/**
 * The bytes of PART of `disk`: a partition number (`1`, `5`), an LVM `vg/lv`, or a label (the
 * filesystem's, or a GPT partition name) that names exactly one volume, as virt-ls's device
 * names and guestfish's labels pick them.
 */
async function volumeOf(disk: Disk, t: ImageTarget): Promise<FsSource> {
  if (t.part === undefined) return disk;
  const { listVolumes, volumeSource } = await import('../inside/volumes.js');
  const { volumes } = await listVolumes(disk, { path: disk.path });
  const byId = volumes.find((v) => v.id === t.part);
  if (byId) return volumeSource(disk, byId);
  const byLabel = volumes.filter((v) => v.content?.label === t.part || v.partition?.name === t.part);
  if (byLabel.length === 1) return volumeSource(disk, byLabel[0]!);
  const known = volumes.map((v) => v.id + (v.content?.label ? ` (${v.content.label})` : '')).filter((x) => x !== '');
  throw new DiskError('INVAL', byLabel.length > 1 ? `${byLabel.length} volumes carry the label "${t.part}": name one by number` : `no partition, volume or label "${t.part}" (volumes: ${known.join(', ') || 'none'})`, { path: t.image, field: 'PART', found: t.part });
}

/** Open IMAGE[:PART] read-only, open its filesystem, run `fn`, close the disk whatever happens. */
export async function withFilesystem<T>(arg: string, o: Parameters<typeof openOpts>[0], fn: (fs: Filesystem, t: ImageTarget) => Promise<T>): Promise<T> {
  const { Disk } = await import('../disk.js');
  const opts = { readOnly: true, ...openOpts(o) };
  let t = splitImagePart(arg);
  let disk: Disk;
  if (t.part === undefined) disk = await Disk.open(arg, opts);
  else {
    // a file whose own name ends in ":something" wins over IMAGE:PART
    try {
      disk = await Disk.open(arg, opts);
      t = { image: arg };
    } catch (err) {
      if (!(err instanceof DiskError) || err.code !== 'FILENOTFOUND') throw err;
      disk = await Disk.open(t.image, opts);
    }
  }
  try {
    const { openFilesystem } = await import('../inside/fs/open.js');
    const fs = await openFilesystem(await volumeOf(disk, t), { name: t.part ? `${disk.path}:${t.part}` : disk.path });
    for (const w of fs.statfs().warnings) process.stderr.write(`warning: ${w.text}\n`);
    return await fn(fs, t);
  } finally {
    await disk.close();
  }
}
