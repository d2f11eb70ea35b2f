/**
 * `vdkit restore DEST-DIR [--point N|TIME] TARGET [-O FMT] [--in-place]`: the disk as of a backup
 * point, into a new image or onto one that holds another point, checked against the manifest's
 * checksum (exit 1 when it differs).
 */
import type { CliCommand } from '../command.js';
import { cancellable } from '../command.js';
import { UsageError } from '../options.js';
import { out } from '../output.js';
import { progressFromOptions } from '../progress.js';

function pointArg(text: string): number | Date {
  if (/^\d+$/.test(text)) return Number(text);
  const t = Date.parse(text);
  if (Number.isNaN(t)) throw new UsageError(`restore: --point takes a point number or a time (ISO 8601), not "${text}"`);
  return new Date(t);
}

export const restore: CliCommand = {
  name: 'restore',
  summary: 'rebuild a disk as of a backup point (vdkit backup), into any format or in place, checked against its checksum',
  define: (cmd) =>
    cmd
      .option('--point <n|time>', 'the point number, or a time: the last point taken at or before it (default: the last point)')
      .option('-O, --output-format <fmt>', 'format of the new image (default qcow2)')
      .option('--type <type>', "the new image's type (VMDK monolithicSparse, streamOptimized, ...)")
      .option('--overwrite', 'replace an existing TARGET')
      .option('--in-place', 'write only what differs onto TARGET, which holds another point of this folder (found by its checksum)')
      .option('--json', 'print the result as JSON')
      .option('-p, --progress', 'show progress on stderr')
      .argument('<dest-dir>')
      .argument('<target>')
      .action(async (dir: string, target: string, o) => {
        const point = o.point === undefined ? undefined : pointArg(o.point);
        if (o.inPlace && (o.overwrite || o.type !== undefined)) throw new UsageError('restore: --in-place writes into TARGET as it is: no --overwrite or --type');
        const { restore: run } = await import('../../ops/backup/restore.js');
        const progress = progressFromOptions(o);
        try {
          const r = await cancellable((signal) =>
            run(dir, target, { point, format: o.outputFormat, type: o.type, overwrite: o.overwrite, inPlace: o.inPlace, signal, onProgress: progress?.update }),
          );
          if (o.json) await out(JSON.stringify({ point: r.point.point, time: r.point.time, from: r.from?.point, bytesWritten: r.bytesWritten, checksum: r.checksum, verified: true }) + '\n');
          else await out(`restored point ${r.point.point} (${r.point.time})${r.from ? ` over point ${r.from.point}` : ''}: ${r.bytesWritten} bytes written, checksum verified\n${r.checksum}  ${target}\n`);
        } finally {
          progress?.end();
        }
      }),
};
