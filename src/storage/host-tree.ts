/**
 * Writing a tree of files on the host, for `vdkit copy-out`: the few file-system calls it needs,
 * here because storage/ is the only layer that touches node:fs. Nothing here follows a symbolic
 * link at the last component of a path it creates or changes: files are opened O_NOFOLLOW, a
 * directory that exists is accepted only when lstat says it is one, and times of links are set
 * with lutimes, so a link planted in the destination cannot redirect a write.
 */
import { chmod, link, lstat, lutimes, mkdir, open, symlink, type FileHandle } from 'node:fs/promises';
import { constants } from 'node:fs';
import { DiskError, fromSystemError } from '../core/errors.js';

export type HostKind = 'missing' | 'file' | 'dir' | 'symlink' | 'other';

/** what is at `path`, not following a final symbolic link */
export async function hostKind(path: string): Promise<HostKind> {
  try {
    const st = await lstat(path);
    return st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw fromSystemError(err, path);
  }
}

/** a directory at `path`: made (mode 0700 until the caller sets the real one), or one already there */
export async function hostMkdir(path: string): Promise<void> {
  try {
    await mkdir(path, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fromSystemError(err, path);
    const kind = await hostKind(path);
    if (kind !== 'dir') throw new DiskError('FILEEXISTS', `exists and is not a directory (${kind})`, { path });
  }
}

export interface HostFileWriter {
  write(data: Buffer, offset: number): Promise<void>;
  /** set the length (what was not written reads as zeros, a hole where the file system has them) and close */
  finish(size: number): Promise<void>;
  /** close without finishing (after an error) */
  abort(): Promise<void>;
}

/** A regular file at `path`, created or emptied; refused when `path` is a symbolic link. */
export async function hostCreateFile(path: string): Promise<HostFileWriter> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new DiskError('FILEEXISTS', 'exists as a symbolic link: not written through', { path });
    throw fromSystemError(err, path);
  }
  return {
    async write(data, offset) {
      try {
        let done = 0;
        while (done < data.length) done += (await fh.write(data, done, data.length - done, offset + done)).bytesWritten;
      } catch (err) {
        throw fromSystemError(err, path);
      }
    },
    async finish(size) {
      try {
        await fh.truncate(size);
      } catch (err) {
        throw fromSystemError(err, path);
      } finally {
        await fh.close();
      }
    },
    async abort() {
      await fh.close();
    },
  };
}

export async function hostSymlink(target: string, path: string): Promise<void> {
  try {
    await symlink(target, path);
  } catch (err) {
    throw fromSystemError(err, path);
  }
}

export async function hostLink(existing: string, path: string): Promise<void> {
  try {
    await link(existing, path);
  } catch (err) {
    throw fromSystemError(err, path);
  }
}

/** seconds and nanoseconds since 1970 */
export interface HostTime {
  readonly sec: number;
  readonly nsec: number;
}

/**
 * Node takes seconds as a number, but turns a negative one into "now"; a Date may be negative
 * (a time before 1970) at the price of sub-millisecond digits.
 */
function hostTime(t: HostTime): number | Date {
  return t.sec >= 0 ? t.sec + t.nsec / 1e9 : new Date(t.sec * 1000 + Math.floor(t.nsec / 1e6));
}

/**
 * Set the permission bits (not on a symbolic link: Linux has no lchmod) and the access and
 * modification times (lutimes: the link's own). A failure to set either is returned as text
 * for a warning, not thrown: a target that cannot keep them (a FAT or SMB mount, a non-owner)
 * still gets the data.
 */
export async function hostSetAttributes(path: string, a: { mode?: number; atime: HostTime; mtime: HostTime }): Promise<string | undefined> {
  const problems: string[] = [];
  if (a.mode !== undefined) {
    try {
      await chmod(path, a.mode);
    } catch (err) {
      problems.push(`mode ${a.mode.toString(8)}: ${(err as Error).message}`);
    }
  }
  try {
    await lutimes(path, hostTime(a.atime), hostTime(a.mtime));
  } catch (err) {
    problems.push(`times: ${(err as Error).message}`);
  }
  return problems.length > 0 ? problems.join('; ') : undefined;
}
