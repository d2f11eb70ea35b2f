/**
 * `vdkit backup SRC DEST-DIR [--incremental | --differential] [--bitmap NAME | --chain]`: a
 * full backup of SRC the first time, then a point holding what changed (ops/backup/).
 */
import type { CliCommand } from '../command.js';
import { cancellable } from '../command.js';
import { UsageError, untrusted } from '../options.js';
import { out } from '../output.js';
import { progressFromOptions } from '../progress.js';

/** a URL as the manifest records it: no user, password or query (which may name key files) */
export function withoutCredentials(name: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(name)) return name;
  try {
    const u = new URL(name);
    u.username = '';
    u.password = '';
    u.search = '';
    return u.toString();
  } catch {
    return name.replace(/\/\/[^/@]*@/, '//').replace(/\?.*$/, '');
  }
}

export const backup: CliCommand = {
  name: 'backup',
  summary: 'back a disk up into a folder: a full qcow2 first, then qcow2 points holding only what changed',
  define: (cmd) =>
    cmd
      .option('--incremental', 'back the new point by the last point (default)')
      .option('--differential', 'back the new point by the full backup (it holds everything since)')
      .option('--bitmap <name>', 'take what changed from this qcow2 dirty bitmap of SRC, and clear it once the point is committed')
      .option('--chain', 'SRC is a chain: the links above the one on top at the last point hold what changed')
      .option('-f, --format <fmt>', 'format of SRC (detected when omitted)')
      .option('--json', 'print the new point\'s manifest as JSON')
      .option('-p, --progress', 'show progress on stderr')
      .addOption(untrusted())
      .argument('<src>')
      .argument('<dest-dir>')
      .action(async (src: string, dir: string, o) => {
        if (o.incremental && o.differential) throw new UsageError('backup: give --incremental or --differential, not both');
        if (o.bitmap !== undefined && o.chain) throw new UsageError('backup: give --bitmap NAME or --chain, not both');
        const [{ backup: run }, { makeHostFolder }] = await Promise.all([import('../../ops/backup/backup.js'), import('../../storage/file.js')]);
        await makeHostFolder(dir);
        const progress = progressFromOptions(o);
        try {
          const r = await cancellable((signal) =>
            run(src, dir, {
              mode: o.differential ? 'differential' : 'incremental',
              changes: o.bitmap !== undefined ? { bitmap: o.bitmap } : o.chain ? { chain: true } : undefined,
              format: o.format,
              sourceName: withoutCredentials(src),
              untrusted: o.untrusted,
              signal,
              onProgress: progress?.update,
            }),
          );
          const m = r.manifest;
          if (o.json) await out(JSON.stringify({ ...m, removed: r.removed }) + '\n');
          else {
            for (const x of r.removed) await out(`removed ${x} (left by a killed backup)\n`);
            await out(`point ${m.point} (${m.kind}): ${m.file}, ${m.ranges.length} range(s), ${m.bytes.changed} bytes changed, ${m.bytes.written} written\n${m.checksum}\n`);
          }
        } finally {
          progress?.end();
        }
      }),
};
