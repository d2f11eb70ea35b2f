/**
 * The Web Worker that does all disk work for the page (web/app.ts), so the page never freezes:
 * it holds the picked files as a BlobNamespace and runs info, check, map and checksum on the
 * same library the CLI runs (bundled by scripts/bundle-web.mjs with the browser platform module).
 * One command at a time per id; `cancel` aborts the command's AbortSignal.
 */
import { Disk } from '../src/disk.js';
import { DiskError } from '../src/core/errors.js';
import { BlobNamespace } from '../src/storage/blob.js';
import { checksum } from '../src/ops/checksum.js';
import { checkDisk, openFindings } from '../src/ops/check.js';
import type { CheckReport } from '../src/formats/types.js';
import type { Command, FromWorker, InfoResult, LinkSummary, MapRange, Result, ToWorker } from './protocol.js';

interface WorkerScope {
  onmessage: ((ev: MessageEvent<ToWorker>) => void) | null;
  postMessage(m: FromWorker): void;
}
const scope = self as unknown as WorkerScope;

let ns: BlobNamespace | undefined;
let tops: string[] = [];
const running = new Map<number, AbortController>();

function post(m: FromWorker): void {
  scope.postMessage(m);
}

/**
 * The images among the picked files that nothing else uses: not a file of another image (a
 * VMDK's extents, which open as raw) and not a parent of another. Longest chain first, then
 * images that are not raw.
 */
async function findTops(space: BlobNamespace): Promise<string[]> {
  const names = space.names();
  const opened: { name: string; format: string; files: string[] }[] = [];
  for (const name of names) {
    const d = await Disk.open(name, { namespace: space, infoOnly: true }).catch(() => undefined);
    if (!d) continue;
    const info = await d.info();
    await d.close();
    opened.push({ name, format: info.format, files: info.files.map((f) => space.absolute(f)) });
  }
  const used = new Set<string>();
  for (const o of opened) for (const f of o.files) if (f !== o.name) used.add(f);
  const depth = new Map<string, number>();
  for (const o of opened) {
    if (used.has(o.name)) continue;
    const d = await Disk.open(o.name, { namespace: space, readOnly: true, parentPaths: names }).catch(() => undefined);
    if (!d) continue;
    depth.set(o.name, d.links.length);
    for (const link of d.links.slice(1)) for (const f of (await link.info()).files) used.add(space.absolute(f));
    await d.close();
  }
  return opened
    .filter((o) => !used.has(o.name) && depth.has(o.name))
    .sort((a, b) => depth.get(b.name)! - depth.get(a.name)! || Number(a.format === 'raw') - Number(b.format === 'raw'))
    .map((o) => o.name);
}

async function openTop(top: string): Promise<Disk> {
  if (!ns) throw new DiskError('FILENOTFOUND', 'no files were picked', { field: 'files' });
  return Disk.open(top, { namespace: ns, readOnly: true, parentPaths: ns.names() });
}

async function summary(link: Disk['links'][number]): Promise<LinkSummary> {
  const i = await link.info();
  return { path: link.path, format: i.format, type: i.type, capacity: i.capacity, allocatedBytes: i.allocatedBytes, fileSize: i.fileSize, files: i.files, parent: i.parent, uuid: i.uuid, clusterSize: i.clusterSize };
}

async function info(top: string): Promise<InfoResult> {
  const d = await openTop(top);
  try {
    const i = await d.info();
    const chain: LinkSummary[] = [];
    for (const link of d.links) chain.push(await summary(link));
    return {
      path: top,
      format: i.format,
      type: i.type,
      capacity: i.capacity,
      allocatedBytes: chain.reduce((n, l) => n + l.allocatedBytes, 0),
      fileSize: chain.reduce((n, l) => n + l.fileSize, 0),
      clusterSize: i.clusterSize,
      geometry: i.geometry,
      chain,
      properties: JSON.parse(JSON.stringify(d.getProperties())) as Record<string, unknown>,
    };
  } finally {
    await d.close();
  }
}

/** the sentences `vdkit check` prints for a report */
function checkLines(report: CheckReport): string[] {
  const lines: string[] = [];
  for (const r of [report, ...(report.links ?? [])]) {
    const prefix = r === report ? '' : `${r.path}: `;
    for (const f of r.findings) {
      const label = f.kind === 'corruption' ? 'Error' : f.kind === 'leak' ? 'Leaked space' : 'Warning';
      lines.push(`${label}: ${prefix}${f.message}${f.field ? ` (${[f.struct, f.field].filter(Boolean).join('.')})` : ''}`);
    }
  }
  return lines;
}

async function map(top: string): Promise<Result['map']> {
  const d = await openTop(top);
  try {
    const ranges: MapRange[] = [];
    for (const r of await d.mapStatus()) {
      const depth = r.depth ?? 0;
      const last = ranges[ranges.length - 1];
      if (last && last.state === r.state && last.depth === depth && last.start + last.length === r.offset) last.length += r.length;
      else ranges.push({ start: r.offset, length: r.length, state: r.state, depth });
    }
    return { capacity: d.capacity, links: d.links.length, ranges };
  } finally {
    await d.close();
  }
}

async function run(id: number, command: Command, top: string, signal: AbortSignal): Promise<Result[Command]> {
  switch (command) {
    case 'info':
      return info(top);
    case 'map':
      return map(top);
    case 'check': {
      const report = await checkDisk(top, { namespace: ns, repair: false });
      const { corruptions, leaks } = openFindings(report);
      return {
        path: top,
        format: report.format,
        corruptions,
        leaks,
        lines: checkLines(report),
        checked: [report.path, ...(report.links ?? []).map((r) => r.path)],
        summary: corruptions === 0 && leaks === 0 ? 'No errors were found on the image.' : `${corruptions} errors and ${leaks} leaks were found on the image.`,
      };
    }
    case 'checksum': {
      const d = await openTop(top);
      try {
        return { digest: await checksum(d, { signal, onProgress: (p) => post({ type: 'progress', id, done: p.done, total: p.total }) }) };
      } finally {
        await d.close();
      }
    }
  }
}

scope.onmessage = (ev) => {
  const m = ev.data;
  if (m.type === 'files') {
    try {
      ns = new BlobNamespace(m.files.map((f) => ({ name: f.name, blob: f.file })));
    } catch (err) {
      post({ type: 'files', names: [], tops: [], error: (err as Error).message });
      return;
    }
    const space = ns;
    findTops(space).then(
      (t) => {
        tops = t;
        post({ type: 'files', names: space.names(), tops });
      },
      (err: Error) => post({ type: 'files', names: space.names(), tops: [], error: err.message }),
    );
  } else if (m.type === 'cancel') {
    running.get(m.id)?.abort(new DiskError('CANCELLED', 'cancelled on the page'));
  } else if (m.type === 'run') {
    const ac = new AbortController();
    running.set(m.id, ac);
    const top = m.top ?? tops[0];
    const done = top === undefined ? Promise.reject(new DiskError('INVALIDDISK', 'none of the picked files is a disk image vdkit can open', { field: 'files' })) : run(m.id, m.command, top, ac.signal);
    done.then(
      (result) => post({ type: 'result', id: m.id, command: m.command, result }),
      (err: unknown) => post({ type: 'error', id: m.id, command: m.command, code: err instanceof DiskError ? err.code : 'ERROR', message: err instanceof Error ? err.message : String(err) }),
    ).finally(() => running.delete(m.id));
  }
};
