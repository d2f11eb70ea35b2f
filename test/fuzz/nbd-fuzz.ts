/**
 * A protocol fuzzer for the NBD server: byte streams recorded from real clients
 * (nbd-seeds/*.hex, made by record-nbd-seeds.ts) plus a few built here (non-fixed newstyle,
 * extended headers, STARTTLS under require, oversized requests) are mutated and fed to one
 * server connection over an in-memory stream, under every TLS mode and with extended headers
 * and read-only on and off. A case fails when something escapes the connection (an uncaught
 * error or rejection), when the connection has not finished 1 s after its input ended (a
 * hang), or when the process holds more than 256 MiB of buffers (unbounded allocation).
 * Failing inputs are written to nbd-regressions/<kind>-<hash>.hex, which the npm test slice
 * replays before the random cases.
 *
 *   npm run fuzz:nbd -- --cases 200000 --seed 7
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Socket } from 'node:net';
import { Cmd, CmdFlag, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, Info, Opt } from '../../src/nbd/protocol/constants.js';
import { encodeInfoRequest, encodeMetaContextRequest, encodeOption, encodeRequest } from '../../src/nbd/protocol/codec.js';
import { Connection, type ServerContext } from '../../src/nbd/server/connection.js';
import { ExportTable } from '../../src/nbd/server/exports.js';
import { DEFAULT_LIMITS } from '../../src/nbd/server/limits.js';
import { runConnection } from '../../src/nbd/server/server.js';
import type { TlsMode } from '../../src/nbd/server/tls.js';
import { mulberry32 } from '../helpers/prng.js';
import { memoryBackend, memoryExport } from '../helpers/nbd-raw.js';

const HERE = fileURLToPath(new URL('.', import.meta.url)).replace(/\/dist\/test\/fuzz\/?$/, '/test/fuzz');
export const SEED_DIR = join(HERE, 'nbd-seeds');
export const REGRESSION_DIR = join(HERE, 'nbd-regressions');

const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
};
const req = (type: number, offset: number, length: number, flags = 0, extended = false) => encodeRequest({ type, flags, cookie: BigInt(type * 1000 + offset), offset: BigInt(offset), length: BigInt(length) }, extended);
const FIXED = u32(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);

/** sessions no Debian 12 client sends, built with the codec */
function builtSeeds(): Record<string, Buffer> {
  return {
    'built-nonfixed-exportname': Buffer.concat([u32(0), encodeOption(Opt.EXPORT_NAME), req(Cmd.READ, 0, 512), req(Cmd.WRITE, 512, 4), Buffer.from('abcd'), req(Cmd.DISC, 0, 0)]),
    'built-extended': Buffer.concat([
      FIXED,
      encodeOption(Opt.EXTENDED_HEADERS),
      encodeOption(Opt.SET_META_CONTEXT, encodeMetaContextRequest('', ['base:allocation', 'qemu:allocation-depth'])),
      encodeOption(Opt.GO, encodeInfoRequest('', [Info.BLOCK_SIZE])),
      req(Cmd.WRITE, 0, 8, CmdFlag.PAYLOAD_LEN, true),
      Buffer.from('12345678'),
      req(Cmd.BLOCK_STATUS, 0, 65536, 0, true),
      req(Cmd.READ, 0, 8, 0, true),
      req(Cmd.WRITE_ZEROES, 0, 2 ** 20, CmdFlag.FAST_ZERO, true),
      req(Cmd.DISC, 0, 0, 0, true),
    ]),
    'built-starttls-list': Buffer.concat([FIXED, encodeOption(Opt.STARTTLS), encodeOption(Opt.LIST), encodeOption(Opt.INFO, encodeInfoRequest('other', [Info.NAME, Info.DESCRIPTION])), encodeOption(Opt.ABORT)]),
    'built-oversize': Buffer.concat([FIXED, encodeOption(Opt.STRUCTURED_REPLY), encodeOption(Opt.GO, encodeInfoRequest('other')), req(Cmd.READ, 0, 33 * 1024 * 1024), req(Cmd.WRITE, 0, 40 * 1024 * 1024), Buffer.alloc(1000)]),
  };
}

export function loadSeeds(): { name: string; bytes: Buffer }[] {
  const out = Object.entries(builtSeeds()).map(([name, bytes]) => ({ name, bytes }));
  for (const f of readdirSync(SEED_DIR).filter((n) => n.endsWith('.hex')).sort()) {
    out.push({ name: f.replace(/\.hex$/, ''), bytes: Buffer.from(readFileSync(join(SEED_DIR, f), 'utf8').replace(/\s+/g, ''), 'hex') });
  }
  return out;
}

const INTERESTING_U32 = [0, 1, 0x1ff, 0x200, 0x1000, 0x1001, 0xffff, 0x10000, 0x100000, 0x2000000, 0x2000001, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const INTERESTING_U8 = [0, 1, 0x7f, 0x80, 0xff];

export function mutate(rand: () => number, seed: Buffer, other: Buffer): Buffer {
  let b = Buffer.from(seed);
  const n = 1 + Math.floor(rand() * 4);
  const at = (len = b.length) => Math.floor(rand() * Math.max(1, len));
  for (let i = 0; i < n; i++) {
    switch (Math.floor(rand() * 8)) {
      case 0:
        if (b.length) b[at()] ^= 1 << Math.floor(rand() * 8);
        break;
      case 1:
        if (b.length) b[at()] = INTERESTING_U8[Math.floor(rand() * INTERESTING_U8.length)]!;
        break;
      case 2:
        if (b.length >= 4) b.writeUInt32BE(INTERESTING_U32[Math.floor(rand() * INTERESTING_U32.length)]!, at(b.length - 3));
        break;
      case 3: {
        const s = at();
        b = Buffer.concat([b.subarray(0, s), b.subarray(s + 1 + Math.floor(rand() * 64))]);
        break;
      }
      case 4: {
        const s = at();
        const e = Math.min(b.length, s + 1 + Math.floor(rand() * 64));
        b = Buffer.concat([b.subarray(0, e), b.subarray(s, e), b.subarray(e)]);
        break;
      }
      case 5:
        b = b.subarray(0, at());
        break;
      case 6:
        b = Buffer.concat([b.subarray(0, at()), other.subarray(at(other.length))]);
        break;
      case 7: {
        const s = at();
        const junk = Buffer.alloc(1 + Math.floor(rand() * 16));
        for (let j = 0; j < junk.length; j++) junk[j] = Math.floor(rand() * 256);
        b = Buffer.concat([b.subarray(0, s), junk, b.subarray(s)]);
        break;
      }
    }
  }
  return b;
}

export interface CaseConfig {
  tlsMode: TlsMode;
  extendedHeaders: boolean;
  readOnly: boolean;
}

export interface Finding {
  kind: 'exception' | 'hang' | 'memory';
  detail: string;
  input: Buffer;
  config: CaseConfig;
}

let caseCount = 0;
const backends = new Map<boolean, ReturnType<typeof memoryExport>[]>();

/** the exports every case sees (made once: what one case wrote, the next may read) */
function exportsFor(readOnly: boolean) {
  let e = backends.get(readOnly);
  if (!e) {
    const extents = (o: number, l: number) => [{ offset: o, length: Math.min(l, 4096), state: 'data' as const, depth: 0 }, ...(l > 4096 ? [{ offset: o + 4096, length: l - 4096, state: 'unallocated' as const }] : [])];
    e = [memoryExport('', memoryBackend(256 * 1024, { readOnly, extents }), 'fuzz'), memoryExport('other', memoryBackend(64 * 1024))];
    backends.set(readOnly, e);
  }
  return e;
}

/** feed `input` to one connection; resolves with a finding, or undefined when all was well */
export async function runCase(input: Buffer, config: CaseConfig, rand: () => number = Math.random, timeoutMs = 1000): Promise<Finding | undefined> {
  const errors: unknown[] = [];
  const onError = (e: unknown) => errors.push(e);
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  try {
    const ctx: ServerContext = {
      exports: new ExportTable(exportsFor(config.readOnly)),
      tlsMode: config.tlsMode,
      limits: { ...DEFAULT_LIMITS, handshakeMs: 5000 },
      extendedHeaders: config.extendedHeaders,
      readOnly: config.readOnly,
      multiConn: true,
      shuttingDown: false,
    };
    let written = 0;
    const stream = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        written += chunk.length;
        cb();
      },
    });
    (stream as unknown as { setNoDelay(): void }).setNoDelay = () => {};
    const conn = new Connection(stream as unknown as Socket, ctx, 1);
    const task = runConnection(conn);
    // the input arrives in pieces of random size, as TCP would deliver it
    for (let at = 0; at < input.length; ) {
      const n = 1 + Math.floor(rand() * 512);
      if (!stream.destroyed) stream.push(input.subarray(at, at + n));
      at += n;
      if (rand() < 0.2) await new Promise((r) => setImmediate(r));
    }
    if (!stream.destroyed) stream.push(null);
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([task.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs)))]);
    clearTimeout(timer);
    stream.destroy();
    await new Promise((r) => setImmediate(r));
    if (errors.length) return { kind: 'exception', detail: String((errors[0] as Error)?.stack ?? errors[0]), input, config };
    if (!finished) return { kind: 'hang', detail: `connection still running ${timeoutMs} ms after its input ended (${written} bytes sent)`, input, config };
    // reading the process's memory figures costs more than a case: sample them
    if (++caseCount % 64 === 0 || input.length > 65536) {
      const buffers = process.memoryUsage().arrayBuffers;
      if (buffers > 256 * 1024 * 1024) return { kind: 'memory', detail: `${buffers} bytes of buffers held`, input, config };
    }
    return undefined;
  } finally {
    process.off('uncaughtException', onError);
    process.off('unhandledRejection', onError);
  }
}

export function configFor(rand: () => number): CaseConfig {
  const modes: TlsMode[] = ['off', 'on', 'require'];
  return { tlsMode: modes[Math.floor(rand() * 3)]!, extendedHeaders: rand() < 0.5, readOnly: rand() < 0.3 };
}

/** a failing input as a regression file: first line the config as JSON, then hex */
export function saveRegression(f: Finding): string {
  const hash = createHash('sha256').update(f.input).digest('hex').slice(0, 12);
  const path = join(REGRESSION_DIR, `${f.kind}-${hash}.hex`);
  writeFileSync(path, `${JSON.stringify(f.config)}\n${(f.input.toString('hex').match(/.{1,64}/g) ?? []).join('\n')}\n`);
  return path;
}

export function loadRegressions(): { name: string; input: Buffer; config: CaseConfig }[] {
  return readdirSync(REGRESSION_DIR)
    .filter((n) => n.endsWith('.hex'))
    .sort()
    .map((name) => {
      const [first, ...rest] = readFileSync(join(REGRESSION_DIR, name), 'utf8').split('\n');
      return { name, config: JSON.parse(first!) as CaseConfig, input: Buffer.from(rest.join('').replace(/\s+/g, ''), 'hex') };
    });
}

export async function fuzz(opts: { cases: number; seed: number; save?: boolean; onProgress?: (done: number) => void }): Promise<Finding[]> {
  const rand = mulberry32(opts.seed);
  const seeds = loadSeeds();
  const findings: Finding[] = [];
  for (let i = 0; i < opts.cases; i++) {
    const s = seeds[Math.floor(rand() * seeds.length)]!;
    const o = seeds[Math.floor(rand() * seeds.length)]!;
    // one case in ten runs the seed unchanged, so the happy paths stay covered
    const input = rand() < 0.1 ? s.bytes : mutate(rand, s.bytes, o.bytes);
    const f = await runCase(input, configFor(rand), rand);
    if (f) {
      findings.push(f);
      if (opts.save) process.stderr.write(`finding (${f.kind}) saved as ${saveRegression(f)}: ${f.detail.split('\n')[0]}\n`);
    }
    if (opts.onProgress && i % 10000 === 9999) opts.onProgress(i + 1);
  }
  return findings;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = (name: string, dflt: number) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? Number(process.argv[i + 1]) : dflt;
  };
  const cases = arg('--cases', 100_000);
  const seed = arg('--seed', Date.now() % 2 ** 31);
  const t0 = Date.now();
  process.stderr.write(`fuzzing the NBD server: ${cases} cases, seed ${seed}\n`);
  const findings = await fuzz({ cases, seed, save: true, onProgress: (n) => process.stderr.write(`  ${n} cases, ${((Date.now() - t0) / 1000).toFixed(1)} s\n`) });
  process.stderr.write(`${cases} cases in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${findings.length} findings\n`);
  process.exitCode = findings.length ? 1 : 0;
}
