/**
 * `vdkit serve` (alias `nbd`): serve an image, its chain, or a folder of images over NBD, shaped
 * like qemu-nbd's options. A thin adapter over serve() (src/nbd/server/server.ts).
 */
import { spawn } from 'node:child_process';
import { Option, type Command } from 'commander';
import { DEFAULT_PORT } from '../../nbd/protocol/constants.js';
import type { ListenOptions, ServeOptions } from '../../nbd/server/server.js';
import { setExitStatus, type CliCommand } from '../command.js';

export const serveCommand: CliCommand = {
  name: 'serve',
  aliases: ['nbd'],
  summary: 'serve a disk (its whole chain) or a folder of disks over NBD to qemu, libnbd, nbdkit and the kernel client (qemu-nbd)',
  define: (cmd: Command) => cmd
    .argument('[image]', 'the image to serve (omit with --dir)')
    .option('-b, --bind <addr>', 'address to listen on', '127.0.0.1')
    .option('-p, --port <port>', `TCP port (0: any free port)`, String(DEFAULT_PORT))
    .option('-k, --socket <path>', 'listen on this Unix socket instead of TCP')
    .option('-r, --read-only', 'refuse writes (EPERM)')
    .option('-x, --export-name <name>', 'export name (default: the empty name)')
    .option('-D, --description <text>', 'export description shown by NBD_OPT_LIST and nbdinfo')
    .option('--dir <dir>', 'serve every image of this folder by its file name (names never reach outside it)')
    .option('-e, --shared <n>', 'connections served at once (more wait their turn); CAN_MULTI_CONN above 1', '16')
    .option('-t, --persistent', 'keep serving after the last client leaves (default: stop then, like qemu-nbd)')
    .option('--pid-file <file>', 'write the process id here once listening')
    .option('--run <cmd>', 'start, run CMD with $NBD_URI set (sh -c), stop when it exits and exit with its status')
    .option('--single-link', 'serve only this image, not its parents (unallocated ranges read as zeros)')
    .option('-f, --format <fmt>', 'image format (detected from the content when omitted)')
    .option('-B, --bitmap <name>', 'offer this persistent dirty bitmap of the (qcow2) image as the qemu:dirty-bitmap:NAME context; repeatable', (v: string, prev: string[] = []) => [...prev, v])
    .addOption(new Option('--tls <mode>', 'off, on (optional) or require (default: require when credentials are given)').choices(['off', 'on', 'require']))
    .option('--tls-creds <dir>', 'X.509 folder: server-cert.pem, server-key.pem, optional ca-cert.pem (then client certificates are required)')
    .option('--tls-psk <file>', 'PSK file of username:hexkey lines (psktool)')
    .option('--handshake-timeout <seconds>', 'drop clients that have not picked an export by then', '10')
    .option('--extended-headers', 'offer NBD_OPT_EXTENDED_HEADERS (experimental extension)')
    .option('-q, --quiet', 'do not print where the server listens')
    .option('-v, --verbose', 'log connection problems on stderr')
    .action(async (image: string | undefined, o, cmd: Command) => {
      if (!image && !o.dir) cmd.error('vdkit serve: give an IMAGE or --dir DIR', { exitCode: 2 });
      if (image && o.dir) cmd.error('vdkit serve: give an IMAGE or --dir DIR, not both', { exitCode: 2 });
      const shared = Number(o.shared);
      const port = Number(o.port);
      const timeout = Number(o.handshakeTimeout);
      if (!Number.isInteger(shared) || shared < 1) cmd.error(`--shared: expected a whole number >= 1, got ${JSON.stringify(o.shared)}`, { exitCode: 2 });
      if (!Number.isInteger(port) || port < 0 || port > 65535) cmd.error(`--port: expected 0..65535, got ${JSON.stringify(o.port)}`, { exitCode: 2 });
      if (!(timeout > 0)) cmd.error(`--handshake-timeout: expected seconds > 0, got ${JSON.stringify(o.handshakeTimeout)}`, { exitCode: 2 });
      if (o.tlsCreds && o.tlsPsk) cmd.error('vdkit serve: --tls-creds and --tls-psk exclude each other', { exitCode: 2 });
      const tlsMode = o.tls ?? (o.tlsCreds || o.tlsPsk ? 'require' : 'off');
      if (tlsMode !== 'off' && !o.tlsCreds && !o.tlsPsk) cmd.error(`--tls ${tlsMode} needs --tls-creds DIR or --tls-psk FILE`, { exitCode: 2 });

      // systemd socket activation: the listening socket is fd 3
      const activated = process.env.LISTEN_FDS !== undefined && Number(process.env.LISTEN_PID) === process.pid && Number(process.env.LISTEN_FDS) >= 1;
      const listen: ListenOptions = activated ? { fd: 3 } : o.socket ? { socket: o.socket } : { host: o.bind, port };
      const opts: ServeOptions = {
        images: image ? [{ path: image, name: o.exportName, description: o.description, format: o.format, bitmaps: o.bitmap }] : undefined,
        dir: o.dir,
        listen,
        readOnly: !!o.readOnly,
        singleLink: !!o.singleLink,
        shared,
        oneShot: !o.persistent && !o.run,
        extendedHeaders: !!o.extendedHeaders,
        limits: { handshakeMs: timeout * 1000 },
        tls: tlsMode === 'off' ? undefined : { mode: tlsMode, x509Dir: o.tlsCreds, pskFile: o.tlsPsk },
        log: o.verbose ? (m) => process.stderr.write(`vdkit serve: ${m}\n`) : undefined,
      };
      // the server, the drivers and the file helpers load only when the command runs
      const [{ serve }, { hostFiles }, { writeAtomic }] = await Promise.all([import('../../nbd/server/server.js'), import('../../storage/file.js'), import('../../storage/namespace.js')]);
      const server = await serve(opts);
      if (o.pidFile) await writeAtomic(hostFiles(), o.pidFile, Buffer.from(`${process.pid}\n`));
      if (!o.quiet && !activated) process.stderr.write(`vdkit serve: listening on ${server.uri}\n`);
      const stop = () => void server.close();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      try {
        if (o.run) {
          const child = spawn('sh', ['-c', o.run], { stdio: 'inherit', env: { ...process.env, NBD_URI: server.uri, uri: server.uri } });
          const status = await new Promise<number>((resolve) => {
            child.on('error', () => resolve(127));
            child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
          });
          setExitStatus(status);
          await server.close();
        }
        await server.closed;
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        if (o.pidFile) await hostFiles().remove(o.pidFile).catch(() => {});
      }
    }),
};
