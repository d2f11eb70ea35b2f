/**
 * The node: built-ins that formats, chain, block and ops may use, all through here: zlib,
 * hashing, random numbers and the worker threads of the stream writer. A browser build swaps
 * this one module (pako or CompressionStream, WebCrypto, Web Workers); the layering test
 * (test/unit/layering.test.ts) fails on any other node: import in those layers.
 */
export { createHash, randomBytes, randomInt, randomUUID } from 'node:crypto';
export { constants as zlibConstants, deflateRawSync, deflateSync, inflate, inflateRawSync, inflateSync } from 'node:zlib';
export { availableParallelism } from 'node:os';
export { Worker, parentPort } from 'node:worker_threads';
export { promisify } from 'node:util';
export type { Readable } from 'node:stream';
