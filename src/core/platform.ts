/**
 * The node: built-ins that formats, chain, block and ops may use, all through here: zlib,
 * hashing, random numbers, the worker threads of the stream writer and the child processes of mkimg. A browser build swaps
 * this one module (pako or CompressionStream, WebCrypto, Web Workers); the layering test
 * (test/unit/layering.test.ts) fails on any other node: import in those layers.
 *
 * crypto, zlib and worker_threads are loaded at their first use, not when this module is: each
 * costs a few ms of start-up, and `vdkit info` or `--version` use none of them (bench/startup.ts).
 */
import { createRequire } from 'node:module';

type Crypto = typeof import('node:crypto');
type Zlib = typeof import('node:zlib');
type Threads = typeof import('node:worker_threads');
type ChildProcesses = typeof import('node:child_process');

const load = createRequire(import.meta.url);
let crypto: Crypto | undefined;
let zlib: Zlib | undefined;
let threads: Threads | undefined;
let children: ChildProcesses | undefined;
const cryptoModule = (): Crypto => (crypto ??= load('node:crypto') as Crypto);
const zlibModule = (): Zlib => (zlib ??= load('node:zlib') as Zlib);
const threadsModule = (): Threads => (threads ??= load('node:worker_threads') as Threads);
const childModule = (): ChildProcesses => (children ??= load('node:child_process') as ChildProcesses);

type AnyFunction = (...args: unknown[]) => unknown;
/** `name` of the module `get` loads, as a function that loads it when first called (overloads kept) */
function late<M, K extends keyof M>(get: () => M, name: K): M[K] {
  return ((...args: unknown[]) => (get()[name] as AnyFunction)(...args)) as M[K];
}

export const createHash = late(cryptoModule, 'createHash');
export const randomBytes = late(cryptoModule, 'randomBytes');
export const randomInt = late(cryptoModule, 'randomInt');
export const randomUUID = late(cryptoModule, 'randomUUID');

/**
 * SHA-256 of one buffer, one-shot. Asynchronous so that the browser build can use Web Crypto's
 * native digest for the bulk of a checksum (its incremental hashes stay on createHash).
 */
export async function sha256(data: Uint8Array): Promise<Buffer> {
  return cryptoModule().createHash('sha256').update(data).digest();
}

export const deflateRawSync = late(zlibModule, 'deflateRawSync');
export const deflateSync = late(zlibModule, 'deflateSync');
export const inflate = late(zlibModule, 'inflate');
export const inflateRawSync = late(zlibModule, 'inflateRawSync');
export const inflateSync = late(zlibModule, 'inflateSync');
/** zlib's constants, read through to the module when first read */
export const zlibConstants: Zlib['constants'] = new Proxy({} as Zlib['constants'], { get: (_target, key) => (zlibModule().constants as unknown as Record<string | symbol, unknown>)[key] });

/** worker_threads' Worker, loaded when the first one is made */
export type Worker = import('node:worker_threads').Worker;
export const Worker: Threads['Worker'] = new Proxy(class {} as unknown as Threads['Worker'], {
  construct: (_target, args: unknown[]) => new (threadsModule().Worker as unknown as new (...a: unknown[]) => object)(...args),
});
/** in a worker thread: the port to the thread that started it (null elsewhere) */
export function workerPort(): Threads['parentPort'] {
  return threadsModule().parentPort;
}

/** zstd one-shot compress/decompress (WebAssembly); `level` 1..22, decompress up to `capacity` bytes */
export interface Zstd {
  compress(data: Uint8Array, level: number): Uint8Array;
  /** one whole frame (no trailing bytes) into at most `capacity` bytes; throws on a bad frame */
  decompress(frame: Uint8Array, capacity: number): Uint8Array;
}
let zstd: Promise<Zstd> | undefined;
/**
 * The zstd library, loaded and initialised at the first call only: its 1.2 MB of WebAssembly
 * costs start-up time nobody but a zstd qcow2 needs. Loaded through `require` (not `import`)
 * so the CLI bundle leaves the package in node_modules, where it finds its .wasm file.
 */
export function loadZstd(): Promise<Zstd> {
  return (zstd ??= (async (): Promise<Zstd> => {
    const m = load('@bokuweb/zstd-wasm') as { init(): Promise<void>; compress(b: Uint8Array, level?: number): Uint8Array; decompress(b: Uint8Array, opts?: { defaultHeapSize: number }): Uint8Array };
    await m.init();
    return { compress: (data, level) => m.compress(data, level), decompress: (frame, capacity) => m.decompress(frame, { defaultHeapSize: capacity }) };
  })().catch((err) => {
    zstd = undefined; // a later call tries again
    throw err;
  }));
}

/** child_process' spawn, loaded at the first call: mkimg runs a command for a partition's contents (-p TYPE:-CMD) */
export const spawn = late(childModule, 'spawn');

export { availableParallelism } from 'node:os';
export { promisify } from 'node:util';
export type { Readable } from 'node:stream';
