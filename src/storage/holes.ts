/**
 * Where a host file has data and where it has holes, from the kernel: `lseek(fd, off,
 * SEEK_DATA/SEEK_HOLE)`, which Node does not expose, reached through koffi (FFI with prebuilt
 * binaries, no compiler). A sparse raw image then costs one system call per extent instead of
 * reading every byte (a 4 TiB empty raw file is one hole).
 *
 * Loaded on first use, never at start-up. Where koffi or the call is missing (another OS, a file
 * system without SEEK_DATA: lseek fails with EINVAL) the answer is `undefined` and callers keep
 * their read-and-look path. A hole is only a hint that the range reads as zeros; data extents may
 * hold zeros too (callers that care still look at the bytes).
 */
import { createRequire } from 'node:module';

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const ENXIO = 6;

export interface FileExtent {
  offset: number;
  length: number;
  data: boolean;
}

type Lseek = (fd: number, offset: number, whence: number) => number | bigint;
interface Koffi {
  load(name: string): { func(decl: string): Lseek };
  errno(): number;
}

let lseek: Lseek | null | undefined;
let koffi: Koffi | undefined;

function binding(): Lseek | null {
  if (lseek !== undefined) return lseek;
  lseek = null;
  if (process.platform !== 'linux' && process.platform !== 'freebsd' && process.platform !== 'darwin') return lseek;
  try {
    koffi = createRequire(import.meta.url)('koffi') as Koffi;
    const libc = koffi.load(process.platform === 'linux' ? 'libc.so.6' : process.platform === 'darwin' ? 'libc.dylib' : 'libc.so.7');
    lseek = libc.func('int64_t lseek(int, int64_t, int)');
  } catch {
    lseek = null;
  }
  return lseek;
}

/** true when this process can ask the kernel for holes (koffi loaded, libc found) */
export function holesAvailable(): boolean {
  return binding() !== null;
}

/**
 * Data and hole extents of [offset, offset + length) of the open file `fd` whose size is
 * `size`, in order and covering the range exactly (past the end of the file reads as a hole);
 * undefined when the kernel or this platform cannot say.
 */
export function fileExtents(fd: number, size: number, offset: number, length: number): FileExtent[] | undefined {
  const seek = binding();
  if (!seek) return undefined;
  const end = offset + length;
  const out: FileExtent[] = [];
  const push = (at: number, to: number, data: boolean) => {
    if (to <= at) return;
    const last = out[out.length - 1];
    if (last && last.data === data) last.length += to - at;
    else out.push({ offset: at, length: to - at, data });
  };
  let at = offset;
  while (at < end) {
    if (at >= size) {
      push(at, end, false);
      break;
    }
    const d = Number(seek(fd, at, SEEK_DATA));
    if (d < 0) {
      if (koffi!.errno() === ENXIO) {
        push(at, end, false); // no data from here to the end of the file
        break;
      }
      return undefined; // EINVAL and kin: this file system cannot say
    }
    const dataAt = Math.min(d, end);
    push(at, dataAt, false);
    if (dataAt >= end) break;
    const h = Number(seek(fd, dataAt, SEEK_HOLE));
    if (h < 0) return undefined;
    const holeAt = Math.min(Math.max(h, dataAt + 1), end);
    push(dataAt, holeAt, true);
    at = holeAt;
  }
  return out;
}
