/**
 * The objects of one HTTP(S) server as a read-only namespace. A name is a URL without
 * credentials; a relative name (a VMDK descriptor's extent, a child's parent hint) resolves
 * against the URL of the name it is relative to (`new URL(rel, base)`), so a multi-file VMDK or
 * a chain in one folder of a web server opens as it does from a folder of files.
 *
 * Credentials (user:password@ in the URL) become a Basic Authorization header sent only to that
 * origin; they are never part of a name, a message or a redirect to elsewhere. Sockets are
 * shared by every object the namespace opens and closed when the last store closes.
 */
import { DiskError } from '../../core/errors.js';
import type { CacheMode, NameKind, NameStat, Namespace } from '../namespace.js';
import type { ByteStore } from '../store.js';
import { HttpClient, type HttpClientOptions } from './client.js';
import { probeObject } from './object.js';
import { HttpStore, type HttpStoreOptions } from './store.js';
import { basicAuth, displayUrl, originOf, parseHttpUrl, parseName } from './url.js';

export type HttpNamespaceOptions = HttpClientOptions & HttpStoreOptions;

export class HttpNamespace implements Namespace {
  readonly label: string;
  readonly cacheMode: CacheMode = 'writeback';
  private client: HttpClient | undefined;
  private openStores = 0;
  /** the client of the last open stores, kept for counting in tests after they close */
  lastClient: HttpClient | undefined;

  private constructor(
    private readonly base: URL,
    private readonly opts: HttpNamespaceOptions,
  ) {
    this.label = originOf(base);
  }

  /** the namespace of `url`'s server (credentials kept inside) and the name of the object in it */
  static fromUrl(url: string, opts: HttpNamespaceOptions = {}): { namespace: HttpNamespace; name: string } {
    const u = parseHttpUrl(url);
    return { namespace: new HttpNamespace(u, opts), name: displayUrl(u) };
  }

  private urlOf(name: string): URL {
    const u = parseName(name, this.base);
    u.username = '';
    u.password = '';
    return u;
  }

  /** the client shared by the stores open now (made on the first open, closed after the last) */
  private acquire(): HttpClient {
    if (!this.client) {
      const header = basicAuth(this.base);
      this.client = new HttpClient(header ? { origin: originOf(this.base), header } : undefined, this.opts);
      this.lastClient = this.client;
    }
    this.openStores++;
    return this.client;
  }

  private release(): void {
    if (--this.openStores === 0 && this.client) {
      this.client.close();
      this.client = undefined;
    }
  }

  private async withClient<T>(fn: (c: HttpClient) => Promise<T>): Promise<T> {
    const c = this.acquire();
    try {
      return await fn(c);
    } finally {
      this.release();
    }
  }

  async open(name: string, opts: { write?: boolean } = {}): Promise<HttpStore> {
    const url = this.urlOf(name);
    if (opts.write) throw this.readOnly(url, 'opened for writing');
    const client = this.acquire();
    try {
      const facts = await probeObject(client, url);
      let released = false;
      return new HttpStore(client, facts, this.opts, () => {
        if (!released) {
          released = true;
          this.release();
        }
      });
    } catch (err) {
      this.release();
      throw err;
    }
  }

  private readOnly(url: URL, what: string): DiskError {
    return new DiskError('RDONLY', `http(s) objects are read-only: an object cannot be ${what} over HTTP (convert to a local file or an nbd:// export instead)`, { path: displayUrl(url) });
  }

  async create(name: string): Promise<ByteStore> {
    throw this.readOnly(this.urlOf(name), 'created');
  }

  async rename(from: string): Promise<void> {
    throw this.readOnly(this.urlOf(from), 'renamed');
  }

  async link(): Promise<boolean> {
    return false;
  }

  async remove(name: string): Promise<void> {
    throw this.readOnly(this.urlOf(name), 'removed');
  }

  /** HTTP has no listing: a search of the folder finds nothing (parents are found by their hints) */
  async list(_dirName: string): Promise<string[]> {
    return [];
  }

  async stat(name: string): Promise<NameStat> {
    const url = this.urlOf(name);
    const facts = await this.withClient((c) => probeObject(c, url));
    const mtime = facts.lastModified ? Date.parse(facts.lastModified) : NaN;
    return { size: facts.size, id: `${displayUrl(facts.url)}#${facts.etag ?? facts.lastModified ?? ''}`, mtimeMs: Number.isFinite(mtime) ? mtime : 0 };
  }

  async exists(name: string): Promise<boolean> {
    return (await this.kind(name)) !== 'missing';
  }

  async kind(name: string): Promise<NameKind> {
    try {
      await this.stat(name);
      return 'file';
    } catch (err) {
      if (err instanceof DiskError && err.code === 'FILENOTFOUND') return 'missing';
      throw err;
    }
  }

  async realName(name: string): Promise<string> {
    return this.absolute(name);
  }

  /** the name's URL without credentials; a trailing "/" goes, as core/names.ts drops it (a folder's name is a prefix of its objects') */
  absolute(name: string): string {
    const d = displayUrl(this.urlOf(name));
    return d.endsWith('/') && !d.includes('?') ? d.replace(/\/+$/, '') : d;
  }

  resolve(base: string, relativeName: string): string {
    return displayUrl(parseName(relativeName.replace(/\\/g, '/'), this.urlOf(base)));
  }
}
