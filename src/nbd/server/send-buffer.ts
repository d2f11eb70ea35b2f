/**
 * A larger kernel send buffer for a client's socket. READ replies are 256 KiB or more while a
 * Unix socket's default send buffer is about 208 KiB (net.core.wmem_default), so every reply
 * waited for the client to drain part of it: one event-loop round trip per ~200 KiB, and the
 * client idled in between. With a few MiB queued in the kernel the client reads on while the
 * loop runs (nbdcopy of a 512 MiB qcow2 over a Unix socket: 0.64x the time, BENCHMARKS.md).
 *
 * Node has no setsockopt, so this goes through koffi (already used for SEEK_DATA), loaded on the
 * first connection. Best effort: another OS, a missing koffi or a refused call leaves the
 * kernel's default, which only costs speed. Linux caps the value at net.core.wmem_max.
 */
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';

const SOL_SOCKET = 1;
const SO_SNDBUF = 7;

type SetSockOpt = (fd: number, level: number, name: number, value: number[], length: number) => number;

let setsockopt: SetSockOpt | null | undefined;

function binding(): SetSockOpt | null {
  if (setsockopt !== undefined) return setsockopt;
  setsockopt = null;
  if (process.platform !== 'linux') return setsockopt;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as { load(name: string): { func(decl: string): SetSockOpt } };
    setsockopt = koffi.load('libc.so.6').func('int setsockopt(int, int, int, _In_ int *, uint32_t)');
  } catch {
    setsockopt = null;
  }
  return setsockopt;
}

/** ask for `bytes` of kernel send buffer on `socket`; true when the kernel took the request */
export function enlargeSendBuffer(socket: Socket, bytes: number): boolean {
  if (!(bytes > 0)) return false;
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return false; // not a kernel socket (TLS wraps one; tests use streams)
  const set = binding();
  if (!set) return false;
  try {
    return set(fd, SOL_SOCKET, SO_SNDBUF, [Math.min(bytes, 0x7fffffff)], 4) === 0;
  } catch {
    return false;
  }
}
