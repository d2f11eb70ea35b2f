/**
 * The exports a server offers, and the open backends behind them. A backend is opened when the
 * first client picks its export with GO/INFO/EXPORT_NAME (never for a bare connection: cf.
 * CVE-2019-14850), shared by every connection to that export (so one flush covers all of them,
 * which is what makes CAN_MULTI_CONN true), and closed when the last one leaves, unless the
 * export is pinned (the images named on the command line stay open for the server's life).
 *
 * Folder exports (--dir): a name is a path relative to the folder. Absolute names, ".."
 * segments, NUL bytes and anything whose real path (symlinks resolved) leaves the folder are
 * "no such export", the same answer as for a name that does not exist, so a client learns
 * nothing about the rest of the file system.
 */
import { isAbsolute, join } from '../../core/names.js';
import { hostFiles } from '../../storage/file.js';
import { backends } from '../../formats/registry.js';
import type { ExportBackend, ExportSpec } from './backend.js';
import { openDiskBackend, type DiskBackendOptions } from './disk-backend.js';

interface OpenExport {
  backend: Promise<ExportBackend>;
  refs: number;
  pinned: boolean;
}

export interface FolderExports {
  dir: string;
  /** open options for every image of the folder */
  open?: DiskBackendOptions;
}

export class ExportTable {
  private readonly open = new Map<string, OpenExport>();
  private readonly fixed: ExportSpec[];

  constructor(
    fixed: readonly ExportSpec[],
    private readonly folder?: FolderExports,
  ) {
    this.fixed = [...fixed];
  }

  /** every export a client may list */
  async list(): Promise<{ name: string; description?: string }[]> {
    const out = this.fixed.map((e) => ({ name: e.name, description: e.description }));
    if (this.folder) {
      const exts = new Set(backends().flatMap((b) => b.extensions.map((x) => x.toLowerCase())));
      const names = (await hostFiles().list(this.folder.dir).catch(() => [] as string[])).filter((n) => exts.has(extOf(n))).sort();
      // only what a client could open: symlinks out of the folder stay hidden
      for (const n of names) if (await safeJoin(this.folder.dir, n)) out.push({ name: n, description: undefined });
    }
    return out;
  }

  /** the export a client named, or undefined ("" is the only export when there is just one) */
  async find(name: string): Promise<ExportSpec | undefined> {
    const hit = this.fixed.find((e) => e.name === name);
    if (hit) return hit;
    if (name === '' && this.fixed.length === 1 && !this.folder) return this.fixed[0];
    if (!this.folder) return undefined;
    const path = await safeJoin(this.folder.dir, name);
    if (!path) return undefined;
    const opts = { untrusted: true, ...this.folder.open };
    // two names of one file (a symlink beside it) must share one open image, never two writers
    return { name, key: `path:${path}`, open: () => openDiskBackend(path, opts) };
  }

  /** open (or share) the backend of `spec`; pair with release() */
  async acquire(spec: ExportSpec, pinned = false): Promise<ExportBackend> {
    const key = keyOf(spec);
    let o = this.open.get(key);
    if (!o) {
      o = { backend: spec.open(), refs: 0, pinned };
      this.open.set(key, o);
      o.backend.catch(() => {
        if (this.open.get(key) === o) this.open.delete(key);
      });
    }
    o.refs++;
    try {
      return await o.backend;
    } catch (err) {
      o.refs--;
      throw err;
    }
  }

  async release(spec: ExportSpec): Promise<void> {
    const key = keyOf(spec);
    const o = this.open.get(key);
    if (!o) return;
    o.refs--;
    if (o.refs > 0 || o.pinned) return;
    this.open.delete(key);
    const b = await o.backend;
    await b.flush().catch(() => {});
    await b.close();
  }

  /** flush and close every open backend (server shutdown) */
  async closeAll(): Promise<void> {
    const all = [...this.open.values()];
    this.open.clear();
    const errors: unknown[] = [];
    for (const o of all) {
      try {
        const b = await o.backend;
        if (!b.readOnly) await b.flush();
        await b.close();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length) throw errors[0];
  }
}

function keyOf(spec: ExportSpec): string {
  return spec.key ?? `name:${spec.name}`;
}

function extOf(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot < 0 ? '' : name.slice(dot + 1).toLowerCase();
}

/** `dir`/`name` when it names a regular file inside `dir` after resolving symlinks, else undefined */
export async function safeJoin(dir: string, name: string): Promise<string | undefined> {
  if (name === '' || name.includes('\0') || isAbsolute(name) || name.includes('\\')) return undefined;
  if (name.split('/').some((s) => s === '..' || s === '.')) return undefined;
  try {
    const files = hostFiles();
    const root = await files.realName(dir);
    const real = await files.realName(join(root, name));
    if (!real.startsWith(root.endsWith('/') ? root : `${root}/`)) return undefined;
    if ((await files.kind(real)) !== 'file') return undefined;
    return real;
  } catch {
    // a name that does not resolve is no export
    return undefined;
  }
}
