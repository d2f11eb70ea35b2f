/** `vdkit bench`: qemu-img bench's requests through any format and chain, plus random offsets. */
import { Option } from 'commander';
import { cancellable, withDisk, type CliCommand } from '../command.js';
import { UsageError, num, openOpts } from '../options.js';
import { humanBytes, out } from '../output.js';

/** qemu's -t modes vdkit's host files can honour, as vdkit's cache modes */
const CACHE: Readonly<Record<string, 'writeback' | 'unsafe' | 'durable'>> = { writeback: 'writeback', unsafe: 'unsafe', writethrough: 'durable' };

function count(text: string, what: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = num(text, what);
  if (n < min || n > max) throw new UsageError(`${what}: ${text} is out of range (${min}..${max})`);
  return n;
}

export const bench: CliCommand = {
  name: 'bench',
  summary: 'time read or write requests through a disk\'s format and chain (qemu-img bench); --random for random offsets',
  define: (cmd) =>
    cmd
      .addOption(new Option('-f, --format <fmt>', 'format of FILE (detected when omitted)'))
      .option('-c, --count <n>', 'requests to send', '75000')
      .option('-d, --depth <n>', 'requests in flight (1..1024)', '64')
      .option('-s, --buffer-size <bytes>', 'bytes per request (K/M suffixes)', '4096')
      .option('-S, --step-size <bytes>', 'bytes from one request\'s offset to the next (default: the buffer size)')
      .option('-o, --offset <bytes>', 'offset of the first request', '0')
      .option('-w, --write', 'write requests instead of reads (FILE is opened read-write)')
      .option('--pattern <byte>', 'the byte write requests carry', '165')
      .option('--flush-interval <n>', 'writes: flush after every N requests')
      .option('--no-drain', 'writes: no flush after the last request')
      .option('-t, --cache <mode>', 'writeback (default), unsafe (flush does nothing) or writethrough (every flush reaches the disk, as writeback does here); none/directsync need O_DIRECT, which vdkit does not use')
      .option('-n, --nocache', 'qemu-img\'s -t none (O_DIRECT): refused, vdkit does not use O_DIRECT')
      .option('-i, --aio <mode>', 'qemu\'s AIO back end: refused, vdkit has one I/O path')
      .option('-U, --force-share', 'accepted for qemu-img scripts: vdkit takes no image locks')
      .option('-q, --quiet', 'print only the result line')
      .option('--random', 'random offsets (aligned to the buffer size) instead of offset, offset + step, ...')
      .option('--seed <n>', 'seed of --random (the same seed sends the same requests)', '1')
      .option('--json', 'the result as JSON')
      .argument('<file>')
      .action(async (file: string, o) => {
        if (o.nocache || o.cache === 'none' || o.cache === 'directsync') throw new UsageError(`${o.nocache ? '-n' : `-t ${o.cache}`}: O_DIRECT is not offered; use -t writeback, unsafe or writethrough`);
        if (o.aio !== undefined) throw new UsageError('-i: vdkit has no choice of AIO back end (its reads and writes go through Node\'s thread pool)');
        const cacheMode = CACHE[o.cache ?? 'writeback'];
        if (!cacheMode) throw new UsageError(`-t: unknown cache mode ${JSON.stringify(o.cache)} (writeback, unsafe, writethrough)`);
        const flushInterval = o.flushInterval === undefined ? 0 : count(o.flushInterval, '--flush-interval', 0);
        if (flushInterval && !o.write) throw new UsageError('--flush-interval is for write requests (-w)');
        if (o.drain === false && !o.write) throw new UsageError('--no-drain is for write requests (-w)');
        const opts = {
          count: count(o.count, '-c', 0),
          depth: count(o.depth, '-d', 1, 1024),
          bufferSize: count(o.bufferSize, '-s', 1, 256 * 1024 * 1024),
          step: o.stepSize === undefined ? undefined : count(o.stepSize, '-S', 0),
          offset: count(o.offset, '-o', 0),
          write: !!o.write,
          pattern: count(o.pattern, '--pattern', 0, 255),
          flushInterval,
          noDrain: o.drain === false,
          random: !!o.random,
          seed: count(o.seed, '--seed', 0, 0xffffffff),
        };
        const { FileNamespace } = await import('../../storage/file.js');
        const { bench: run } = await import('../../ops/bench.js');
        await withDisk(file, { readOnly: !o.write, ...openOpts(o), namespace: new FileNamespace({ cacheMode }) }, async (d) => {
          const where = opts.random ? `random offsets, seed ${opts.seed}` : `starting at offset ${opts.offset}, step size ${opts.step ?? opts.bufferSize}`;
          if (!o.quiet && !o.json) await out(`Sending ${opts.count} ${opts.write ? 'write' : 'read'} requests, ${opts.bufferSize} bytes each, ${opts.depth} in parallel (${where})\n`);
          const r = await cancellable((signal) => run(d, { ...opts, signal }));
          const perSecond = r.seconds > 0 ? r.requests / r.seconds : 0;
          if (o.json) await out(JSON.stringify({ ...r, requestsPerSecond: Math.round(perSecond), bytesPerSecond: Math.round(perSecond * opts.bufferSize) }) + '\n');
          else await out(`Run completed in ${r.seconds.toFixed(3)} seconds.${o.quiet ? '' : ` (${Math.round(perSecond)} requests/s, ${humanBytes(Math.round(perSecond * opts.bufferSize))}/s)`}\n`);
        });
      }),
};
