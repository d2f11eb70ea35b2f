/**
 * `vdkit web`: serve the browser build (dist/web, made by scripts/bundle-web.mjs) from the
 * installed package, so a user opens the page on their own machine. The server hands out the
 * page's static files and nothing else: it answers GET and HEAD for the names in that folder
 * only, takes no request bodies, and the images the page reads never reach it (the page reads
 * the picked files in the browser).
 */
import type { Command } from 'commander';
import type { CliCommand } from '../command.js';

export const web: CliCommand = {
  name: 'web',
  summary: 'serve the page that inspects disk images in the browser (info, check, allocation map, checksum; files never leave the machine)',
  define: (cmd: Command) =>
    cmd
      .option('-p, --port <port>', 'TCP port (0: any free port)', '8021')
      .option('-b, --bind <addr>', 'address to listen on', '127.0.0.1')
      .action(async (o: { port: string; bind: string }, c: Command) => {
        const port = Number(o.port);
        if (!Number.isInteger(port) || port < 0 || port > 65535) c.error(`--port: expected 0..65535, got ${JSON.stringify(o.port)}`, { exitCode: 2 });
        const { serveStatic, webFolder } = await import('../static-server.js');
        const server = await serveStatic({ dir: await webFolder(), host: o.bind, port });
        process.stdout.write(`vdkit web: open ${server.url} (Ctrl-C stops it)\n`);
        const stop = () => void server.close();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        try {
          await server.closed;
        } finally {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
        }
      }),
};
