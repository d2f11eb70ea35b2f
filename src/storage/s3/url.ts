/**
 * `s3://bucket/key` names. The query may carry `path-style=1|0`, `region=` and `endpoint=`
 * (a compatible store's URL); nothing else, so a typo is refused rather than ignored. Credentials
 * never come from the name (a user part is refused): they are the SDK's, from the environment
 * and the shared config files. `display` is the name without the query, as messages and --json
 * print it.
 *
 * `s3:/bucket/key` (one slash) is taken too: names are '/'-separated paths to the rest of vdkit,
 * and core/names' normalize folds the URL's double slash when ops build a name beside another
 * (a convert's hidden temporary name).
 */
import { DiskError } from '../../core/errors.js';
import { normalize } from '../../core/names.js';

export interface S3Url {
  bucket: string;
  /** the object key, without a leading slash ("" for the bucket itself) */
  key: string;
  pathStyle?: boolean;
  region?: string;
  endpoint?: string;
  /** s3://bucket/key */
  display: string;
}

const PREFIX = /^s3:\/+/i;

export function isS3Url(name: string): boolean {
  return PREFIX.test(name);
}

/** bucket names as S3 allows them (3-63 of a-z 0-9 . -), loosened to what compatible stores take (A-Z, _, shorter) */
const BUCKET = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

export function parseS3Url(name: string): S3Url {
  if (!isS3Url(name)) throw new DiskError('INVAL', 'not an s3:// name', { path: name, expected: 's3://bucket/key' });
  const rest = name.replace(PREFIX, '');
  const q = rest.indexOf('?');
  const path = q < 0 ? rest : rest.slice(0, q);
  const slash = path.indexOf('/');
  const authority = slash < 0 ? path : path.slice(0, slash);
  const display0 = `s3://${authority}`;
  if (authority.includes('@')) {
    throw new DiskError('INVAL', 'an s3:// name carries no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE', { path: `s3://${authority.slice(authority.lastIndexOf('@') + 1)}/...`, field: 'user' });
  }
  if (!BUCKET.test(authority)) throw new DiskError('INVAL', `${JSON.stringify(authority)} is not a bucket name`, { path: display0, field: 'bucket', found: authority });
  let key: string;
  try {
    key = decodeURIComponent(slash < 0 ? '' : path.slice(slash + 1));
  } catch {
    throw new DiskError('INVAL', 'the key has a bad percent-escape', { path: display0, field: 'key' });
  }
  // keys are taken as paths: "a/../b" is "b", and no name can climb out of the bucket
  key = key === '' ? '' : normalize('/' + key).slice(1);
  const url: S3Url = { bucket: authority, key, display: s3Display(authority, key) };
  if (q >= 0) {
    for (const [k, v] of new URLSearchParams(rest.slice(q + 1))) {
      if (k === 'path-style') url.pathStyle = flag(v, url.display);
      else if (k === 'region') url.region = v;
      else if (k === 'endpoint') url.endpoint = endpointUrl(v, url.display);
      else throw new DiskError('INVAL', `unknown s3:// parameter ${JSON.stringify(k)} (known: path-style, region, endpoint)`, { path: url.display, field: k });
    }
  }
  return url;
}

function flag(v: string, path: string): boolean {
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new DiskError('INVAL', 'path-style is 1 or 0', { path, field: 'path-style', found: v });
}

/** an endpoint must be an http(s) URL; it is printed without any user part */
export function endpointUrl(v: string, path: string): string {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new DiskError('INVAL', 'the endpoint is not a URL', { path, field: 'endpoint', found: v });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new DiskError('INVAL', 'the endpoint is an http:// or https:// URL', { path, field: 'endpoint', found: u.protocol });
  if (u.username || u.password) throw new DiskError('INVAL', 'the endpoint carries no credentials', { path, field: 'endpoint' });
  return u.toString().replace(/\/$/, '');
}

/** `s3://bucket/key` of a bucket and key */
export function s3Display(bucket: string, key: string): string {
  // the bucket itself without a trailing slash, so "a folder's name + '/'" prefixes its keys
  return key === '' ? `s3://${bucket}` : `s3://${bucket}/${key}`;
}
