/**
 * The exports of one NBD server as a namespace: a name is an NBD URI of that server (its
 * display form, without credentials), and a relative name is another export of the same
 * server (so a qcow2 export's backing file "base.qcow2" is the export "base.qcow2"). Each open
 * makes its own connections and closing the store ends them, so the namespace holds nothing.
 * Exports cannot be created, renamed or removed over NBD: writing into one is opening it for
 * writing (convert -n).
 */
import { DiskError } from '../../core/errors.js';
import type { CacheMode, NameKind, NameStat, Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import { NbdStore, type NbdStoreOptions } from './store.js';
import { clientTlsFor, type ClientTls } from './tls.js';
import { isNbdUri, parseNbdUri, siblingDisplay, type NbdUri } from './uri.js';

export type NbdNamespaceOptions = Omit<NbdStoreOptions, 'write'>;

export class NbdNamespace implements Namespace {
  readonly label: string;
  readonly cacheMode: CacheMode = 'writeback';
  private constructor(
    private readonly base: NbdUri,
    private readonly tls: ClientTls | undefined,
    private readonly opts: NbdNamespaceOptions,
  ) {
    this.label = base.server;
  }

  /** the namespace of `uri`'s server (credentials read now) and the name of its export in it */
  static async fromUri(uri: string, opts: NbdNamespaceOptions = {}): Promise<{ namespace: NbdNamespace; name: string }> {
    const u = parseNbdUri(uri);
    const ns = new NbdNamespace(u, await clientTlsFor(u), opts);
    return { namespace: ns, name: u.display };
  }

  /**
   * the namespace of a server whose TLS settings the caller made (VixDiskLib's nbdssl: a
   * pinned thumbprint, which no URI parameter carries)
   */
  static forServer(base: NbdUri, tls: ClientTls | undefined, opts: NbdNamespaceOptions = {}): NbdNamespace {
    return new NbdNamespace(base, tls, opts);
  }

  /** the parsed URI of `name`, which must be on this namespace's server */
  private uriOf(name: string): NbdUri {
    if (!isNbdUri(name)) return parseNbdUri(siblingDisplay(this.base, name.replace(/^\/+/, '')));
    const u = parseNbdUri(name);
    if (u.server !== this.base.server) throw new DiskError('INVAL', `${u.display} is on another server than ${this.base.server}`, { path: u.display, field: 'server', expected: this.base.server, found: u.server });
    // the credentials are the namespace's, whatever the name carries
    return { ...this.base, exportName: u.exportName, display: u.display };
  }

  async open(name: string, opts: { write?: boolean } = {}): Promise<NbdStore> {
    return NbdStore.open(this.uriOf(name), this.tls, { ...this.opts, write: !!opts.write });
  }

  async create(name: string): Promise<ByteStore> {
    throw new DiskError('NOTSUPPORTED', 'an NBD export cannot be created over NBD: write into the existing export (convert -n)', { path: this.uriOf(name).display });
  }

  async rename(from: string): Promise<void> {
    throw new DiskError('NOTSUPPORTED', 'NBD exports cannot be renamed', { path: this.uriOf(from).display });
  }

  async link(): Promise<boolean> {
    return false;
  }

  async remove(name: string): Promise<void> {
    throw new DiskError('NOTSUPPORTED', 'NBD exports cannot be removed', { path: this.uriOf(name).display });
  }

  async list(): Promise<string[]> {
    return [];
  }

  async stat(name: string): Promise<NameStat> {
    const st = await this.open(name);
    try {
      return { size: await st.size(), id: st.name, mtimeMs: 0 };
    } finally {
      await st.close();
    }
  }

  async exists(name: string): Promise<boolean> {
    try {
      await this.stat(name);
      return true;
    } catch (err) {
      if (err instanceof DiskError && err.code === 'FILENOTFOUND') return false;
      throw err;
    }
  }

  async kind(name: string): Promise<NameKind> {
    return (await this.exists(name)) ? 'file' : 'missing';
  }

  async realName(name: string): Promise<string> {
    return this.absolute(name);
  }

  absolute(name: string): string {
    return this.uriOf(name).display;
  }

  resolve(_base: string, relativeName: string): string {
    return this.uriOf(relativeName).display;
  }
}
