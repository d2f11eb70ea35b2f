/**
 * Records what real NBD clients send, as seeds for the protocol fuzzer (test/fuzz/nbd-fuzz.ts).
 * Runs vdkit's server behind a recording Unix-socket proxy and drives nbdinfo, qemu-img, qemu-io
 * and nbdsh through it; each client->server byte stream is written to
 * test/fuzz/nbd-seeds/<name>.hex. Run by hand after protocol changes:
 *
 *   npm run build && node dist/test/fuzz/record-nbd-seeds.js
 */
import net from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '../../src/nbd/server/server.js';
import { repoRoot, run } from '../helpers/tools.js';

const SESSIONS: Record<string, [string, (uri: string) => string[]]> = {
  'nbdinfo-map': ['nbdinfo', (u) => ['--map', u]],
  'nbdinfo-depth': ['nbdinfo', (u) => ['--map=qemu:allocation-depth', u]],
  'nbdinfo-list': ['nbdinfo', (u) => ['--list', u]],
  'qemu-img-map': ['qemu-img', (u) => ['map', '--output=json', '-f', 'raw', u]],
  'qemu-io-writes': ['qemu-io', (u) => ['-f', 'raw', '-c', 'write -P 0x41 0 4k', '-c', 'write -z 8k 4k', '-c', 'discard 16k 4k', '-c', 'write -f -P 0x42 20k 512', '-c', 'flush', '-c', 'read 0 4k', u]],
  'nbdsh-mixed': [
    'nbdsh',
    (u) => ['-u', u, '-c', "h.pread(512, 0)\nh.cache(4096, 0)\ntry:\n  h.zero(4096, 4096, nbd.CMD_FLAG_FAST_ZERO)\nexcept nbd.Error:\n  pass\nh.trim(4096, 8192)\nh.pwrite(b'x'*100, 1000, nbd.CMD_FLAG_FUA)\nh.flush()"],
  ],
};

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'nbd-seeds-'));
  const out = join(repoRoot(), 'test', 'fuzz', 'nbd-seeds');
  try {
    const img = join(dir, 'd.raw');
    await writeFile(img, Buffer.alloc(1024 * 1024, 7));
    const server = await serve({ images: [img], listen: { socket: join(dir, 's.sock') } });
    for (const [name, [cmd, args]] of Object.entries(SESSIONS)) {
      const chunks: Buffer[] = [];
      const proxyPath = join(dir, `${name}.sock`);
      const proxy = net.createServer((c) => {
        const up = net.connect(join(dir, 's.sock'));
        c.on('data', (b) => {
          chunks.push(Buffer.from(b));
          up.write(b);
        });
        up.on('data', (b) => c.write(b));
        c.on('close', () => up.destroy());
        up.on('close', () => c.destroy());
        c.on('error', () => {});
        up.on('error', () => {});
      });
      await new Promise<void>((r) => proxy.listen(proxyPath, () => r()));
      const r = await run(cmd, args(`nbd+unix:///?socket=${proxyPath}`), { env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` } });
      if (r.code !== 0) throw new Error(`${name}: ${r.stderr}`);
      await new Promise<void>((r2) => proxy.close(() => r2()));
      const bytes = Buffer.concat(chunks);
      await writeFile(join(out, `${name}.hex`), (bytes.toString('hex').match(/.{1,64}/g) ?? []).join('\n') + '\n');
      process.stdout.write(`${name}: ${bytes.length} bytes\n`);
    }
    await server.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
