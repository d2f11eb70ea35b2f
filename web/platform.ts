/**
 * The browser's core/platform.ts: scripts/bundle-web.mjs puts this module where the library
 * imports core/platform.js, so formats, chain, block and ops run unchanged in a Web Worker.
 * Every name core/platform.ts exports is here (web/tsconfig.json checks the shapes); what a
 * browser cannot do yet (deflate for writing compressed images, the compression worker pool,
 * zstd, child processes) throws NOTSUPPORTED when called, so a read-only inspection never
 * reaches it.
 *
 * - hashing: src/core/sha.ts (synchronous and incremental, which Web Crypto's digest is not);
 * - inflate: src/core/inflate.ts (synchronous: the VMDK and qcow2 read paths inflate a grain or
 *   cluster inline; DecompressionStream is asynchronous and would change those paths);
 * - randomness: crypto.getRandomValues.
 */
import { DiskError } from '../src/core/errors.js';
import { inflateRaw, inflateZlib, type InflateOptions } from '../src/core/inflate.js';

import { createHash } from '../src/core/sha.js';

export { createHash };

/**
 * Web Crypto's native digest where the page is a secure context (https, localhost), else the
 * plain-JS one: the checksum hashes every 1 MiB block through here, ~10x faster natively.
 * digest() copies the bytes when called, so the caller may reuse its buffer at once.
 */
export async function sha256(data: Uint8Array): Promise<Buffer> {
  const subtle = globalThis.crypto?.subtle;
  if (subtle) return Buffer.from(await subtle.digest('SHA-256', data as Uint8Array<ArrayBuffer>));
  return createHash('sha256').update(data).digest();
}

function notInBrowser(what: string): never {
  throw new DiskError('NOTSUPPORTED', `${what} is not in the browser build yet`, { field: what });
}

export function randomBytes(n: number): Buffer {
  const b = Buffer.alloc(n);
  // getRandomValues fills at most 65536 bytes a call
  for (let at = 0; at < n; at += 65536) crypto.getRandomValues(b.subarray(at, Math.min(n, at + 65536)));
  return b;
}

/** an integer in [min, max), unbiased (rejection sampling as node:crypto's randomInt) */
export function randomInt(min: number, max?: number): number {
  if (max === undefined) [min, max] = [0, min];
  const range = max - min;
  if (!(range > 0 && range <= 2 ** 32)) throw new RangeError(`randomInt: range ${min}..${max} not supported`);
  const limit = 2 ** 32 - (2 ** 32 % range);
  const word = new Uint32Array(1);
  for (;;) {
    crypto.getRandomValues(word);
    if (word[0]! < limit) return min + (word[0]! % range);
  }
}

/** a version 4 UUID; crypto.randomUUID exists only in secure contexts, getRandomValues everywhere */
export function randomUUID(): string {
  const b = randomBytes(16);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function inflateSync(data: Uint8Array, opts: InflateOptions = {}): Buffer {
  return inflateZlib(data, opts);
}

export function inflateRawSync(data: Uint8Array, opts: InflateOptions = {}): Buffer {
  return inflateRaw(data, opts);
}

/** node:zlib's callback inflate (the streamOptimized pipe reader promisifies it) */
export function inflate(data: Uint8Array, opts: InflateOptions, done: (err: Error | null, out?: Buffer) => void): void {
  let out: Buffer;
  try {
    out = inflateZlib(data, opts);
  } catch (err) {
    queueMicrotask(() => done(err as Error));
    return;
  }
  queueMicrotask(() => done(null, out));
}

export function deflateSync(): Buffer {
  return notInBrowser('deflate');
}
export function deflateRawSync(): Buffer {
  return notInBrowser('deflate');
}

/** the zlib constants the library reads */
export const zlibConstants = { Z_NO_FLUSH: 0, Z_PARTIAL_FLUSH: 1, Z_SYNC_FLUSH: 2, Z_FULL_FLUSH: 3, Z_FINISH: 4 } as const;

export class Worker {
  constructor() {
    notInBrowser('the compression worker pool');
  }
}
export function workerPort(): null {
  return null;
}

export function loadZstd(): Promise<never> {
  return Promise.reject(new DiskError('NOTSUPPORTED', 'zstd-compressed clusters are not read in the browser build yet', { field: 'zstd' }));
}

export function spawn(): never {
  return notInBrowser('running a command');
}

export function availableParallelism(): number {
  return Math.max(1, globalThis.navigator?.hardwareConcurrency ?? 1);
}

/** node:util's promisify for a callback-last function */
export function promisify<A extends unknown[], R>(fn: (...args: [...A, (err: Error | null, r?: R) => void]) => void): (...args: A) => Promise<R> {
  return (...args: A) => new Promise<R>((resolve, reject) => fn(...args, (err, r) => (err ? reject(err) : resolve(r as R))));
}

export type Readable = never;
