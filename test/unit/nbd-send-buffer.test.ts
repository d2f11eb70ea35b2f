/**
 * The server asks for a larger kernel send buffer on each client socket (send-buffer.ts): the
 * value read back with getsockopt(SO_SNDBUF) grows past the kernel's default, over a Unix socket
 * served by serve() itself, and limits.sendBuffer 0 leaves the default.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import net from 'node:net';
import { join } from 'node:path';
import { Disk } from '../../src/disk.js';
import { serve } from '../../src/nbd/server/server.js';
import { tmpDir } from '../helpers/tools.js';

type GetSockOpt = (fd: number, level: number, name: number, value: number[], length: number[]) => number;

function getsockopt(): GetSockOpt | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as { load(n: string): { func(d: string): GetSockOpt } };
    return koffi.load('libc.so.6').func('int getsockopt(int, int, int, _Inout_ int *, _Inout_ uint32_t *)');
  } catch {
    return undefined;
  }
}

/** the SO_SNDBUF of the server's end of the first connection `serve` accepts */
async function serverSendBuffer(dir: string, image: string, sendBuffer?: number): Promise<number> {
  const get = getsockopt()!;
  const sock = join(dir, `s${sendBuffer ?? 'd'}.sock`);
  let seen: net.Socket | undefined;
  const server = await serve({ images: [image], readOnly: true, listen: { socket: sock }, limits: sendBuffer === undefined ? undefined : { sendBuffer } });
  try {
    // the server's listener is internal: find its end through the accepted socket's peer
    const peerSeen = new Promise<void>((resolve) => {
      const orig = net.Socket.prototype.setNoDelay;
      net.Socket.prototype.setNoDelay = function (this: net.Socket, ...a: [boolean?]) {
        if (!seen && (this as unknown as { server?: unknown }).server) seen = this;
        net.Socket.prototype.setNoDelay = orig;
        resolve();
        return orig.apply(this, a);
      };
    });
    const client = net.connect(sock);
    await peerSeen;
    const fd = (seen as unknown as { _handle: { fd: number } })._handle.fd;
    const out = [0];
    assert.equal(get(fd, 1, 7, out, [4]), 0, 'getsockopt');
    client.destroy();
    return out[0]!;
  } finally {
    await server.close();
  }
}

test('serve enlarges each client socket send buffer (SO_SNDBUF) past the kernel default; sendBuffer 0 keeps it', async (t) => {
  if (!getsockopt()) {
    t.skip('needs Linux and koffi to read SO_SNDBUF back');
    return;
  }
  const dir = (await tmpDir(t)).path;
  const image = join(dir, 'd.raw');
  await (await Disk.create(image, { format: 'raw', capacity: 1024 * 1024 })).close();
  const kept = await serverSendBuffer(dir, image, 0);
  const enlarged = await serverSendBuffer(dir, image);
  assert.ok(enlarged > kept, `SO_SNDBUF ${enlarged} (asked 2 MiB) should exceed the default ${kept}`);
});
