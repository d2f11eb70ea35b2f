/**
 * Names inside a namespace (storage/namespace.ts): '/'-separated, like POSIX paths, whatever
 * holds the bytes (a folder, memory, an object store). Pure string functions, so formats,
 * chain and ops can take names apart without node:path. Turning a relative name into an
 * absolute one depends on the namespace (a file namespace uses the process's folder): that is
 * `Namespace.absolute`, not here.
 */

/**
 * A URL name (`s3://bucket/key`, `https://host/a/b`): its `scheme://authority` part is a root
 * that normalizing keeps whole (folding the double slash made `s3:/bucket` names that each URL
 * namespace had to take back), and the rest is an absolute path under it.
 */
const URL_ROOT = /^([a-z][a-z0-9+.-]*:\/\/[^/]*)(\/.*)?$/i;

export function isAbsolute(name: string): boolean {
  return name.startsWith('/') || URL_ROOT.test(name);
}

/** "." and ".." resolved, repeated and trailing slashes dropped; ".." above the root stays at the root */
export function normalize(name: string): string {
  const url = URL_ROOT.exec(name);
  if (url) return url[1] + normalize('/' + (url[2] ?? ''));
  const abs = isAbsolute(name);
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length > 0 && out[out.length - 1] !== '..') out.pop();
      else if (!abs) out.push('..');
      continue;
    }
    out.push(part);
  }
  const body = out.join('/');
  if (abs) return '/' + body;
  return body === '' ? '.' : body;
}

export function join(...parts: string[]): string {
  const nonEmpty = parts.filter((p) => p !== '');
  return nonEmpty.length === 0 ? '.' : normalize(nonEmpty.join('/'));
}

/** the folder part: "a/b/c" -> "a/b", "c" -> ".", "/c" -> "/" */
export function dirname(name: string): string {
  const trimmed = name.length > 1 ? name.replace(/\/+$/, '') : name;
  const i = trimmed.lastIndexOf('/');
  if (i < 0) return '.';
  if (i === 0) return '/';
  return trimmed.slice(0, i);
}

export function basename(name: string, ext?: string): string {
  const trimmed = name.length > 1 ? name.replace(/\/+$/, '') : name;
  const base = trimmed.slice(trimmed.lastIndexOf('/') + 1);
  return ext !== undefined && base.endsWith(ext) && base !== ext ? base.slice(0, base.length - ext.length) : base;
}

/** the extension with its dot ("x.vmdk" -> ".vmdk"), "" when there is none (".profile" has none) */
export function extname(name: string): string {
  const base = basename(name);
  const i = base.lastIndexOf('.');
  return i <= 0 ? '' : base.slice(i);
}

/** `name` relative to the folder `fromDir`; both absolute (or both relative to the same place) */
export function relative(fromDir: string, name: string): string {
  const a = normalize(fromDir).split('/').filter((p) => p !== '');
  const b = normalize(name).split('/').filter((p) => p !== '');
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const up = a.slice(i).map(() => '..');
  return [...up, ...b.slice(i)].join('/');
}

/**
 * `name` taken relative to the folder of `base` (extent names, parent hints); an absolute
 * `name` stays as it is. Both sides are names of one namespace; the result is normalized.
 */
export function resolveBeside(base: string, name: string): string {
  if (isAbsolute(name)) return normalize(name);
  return join(dirname(base), name);
}
