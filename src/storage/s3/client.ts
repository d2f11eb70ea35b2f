/**
 * The AWS SDK, loaded when an s3:// name is first used (start-up of every other command pays
 * nothing for it), and one configured client per namespace.
 *
 * Configuration is the SDK's own wherever it has one: credentials from its default provider
 * chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE with
 * ~/.aws/credentials and ~/.aws/config, SSO, web identity, instance roles), region from
 * AWS_REGION or the profile. vdkit adds: the endpoint of a compatible store (`?endpoint=`, else
 * AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL), path-style addressing (`?path-style=`, else
 * VDKIT_S3_PATH_STYLE, else on exactly when an endpoint is given, as most compatible stores
 * need), us-east-1 when nothing names a region, and checksums only where S3 requires them
 * (the SDK's CRC defaults are refused by many compatible stores; Xen Orchestra does the same).
 */
import { createRequire } from 'node:module';
import { DiskError } from '../../core/errors.js';
import { endpointUrl, type S3Url } from './url.js';

type ClientModule = typeof import('@aws-sdk/client-s3');
type StorageModule = typeof import('@aws-sdk/lib-storage');

let sdk: Promise<{ s3: ClientModule; storage: StorageModule }> | undefined;

/** the SDK's modules, imported once */
export function loadSdk(): Promise<{ s3: ClientModule; storage: StorageModule }> {
  // the SDK warns on Node < 22 that its releases after January 2027 will need Node 22: vdkit
  // pins its version (package.json), so the warning is about releases it does not use
  if (typeof process === 'object') process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  // through require (the SDK ships CommonJS), not import(): the CLI bundle leaves the SDK in
  // node_modules, and the bundle runs in node:vm, where import() of a package is not served
  sdk ??= (async () => {
    const load = createRequire(import.meta.url);
    return { s3: load('@aws-sdk/client-s3') as ClientModule, storage: load('@aws-sdk/lib-storage') as StorageModule };
  })();
  return sdk;
}

export interface S3Settings {
  endpoint?: string;
  pathStyle: boolean;
  region?: string;
}

/** what the name and the environment say, before the SDK adds its own chain */
export function s3Settings(url: Pick<S3Url, 'endpoint' | 'pathStyle' | 'region' | 'display'>, env: NodeJS.ProcessEnv = process.env): S3Settings {
  const fromEnv = env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL;
  const endpoint = url.endpoint ?? (fromEnv ? endpointUrl(fromEnv, url.display) : undefined);
  const envStyle = env.VDKIT_S3_PATH_STYLE;
  const pathStyle = url.pathStyle ?? (envStyle !== undefined && envStyle !== '' ? /^(1|true|yes|on)$/i.test(envStyle) : endpoint !== undefined);
  return { endpoint, pathStyle, region: url.region };
}

export interface S3Context {
  client: import('@aws-sdk/client-s3').S3Client;
  s3: ClientModule;
  storage: StorageModule;
  settings: S3Settings;
}

const CONNECT_TIMEOUT_MS = 30_000;
/** a request whose socket stays silent this long is failed (and retried by the SDK) */
const REQUEST_TIMEOUT_MS = 120_000;

export async function s3Context(settings: S3Settings): Promise<S3Context> {
  const { s3, storage } = await loadSdk();
  const make = (region: string | undefined) =>
    new s3.S3Client({
      ...(region ? { region } : {}),
      ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
      forcePathStyle: settings.pathStyle,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS },
      maxAttempts: 4,
    });
  let client = make(settings.region);
  if (!settings.region) {
    // the SDK's region chain found nothing (no AWS_REGION, no profile region): S3's default
    const found = await client.config.region().catch(() => undefined);
    if (!found) {
      client.destroy();
      client = make('us-east-1');
    }
  }
  return { client, s3, storage, settings };
}

interface SdkError {
  name?: string;
  message?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
}

/** an SDK failure as a DiskError naming the object and what was being done */
export function s3Error(err: unknown, path: string, what: string): DiskError {
  if (err instanceof DiskError) return err;
  const e = (err ?? {}) as SdkError;
  const status = e.$metadata?.httpStatusCode;
  const code = e.name ?? e.Code ?? 'Error';
  // the SDK names a bodiless error (HEAD) by its status and gives "UnknownError" as its text
  const text = `${code}${e.message && e.message !== code && e.message !== 'UnknownError' ? ` (${e.message})` : ''}${status ? ` [HTTP ${status}]` : ''}`;
  const details = { path, field: what, found: code };
  if (code === 'NoSuchKey' || code === 'NotFound' || code === 'NoSuchBucket' || (status === 404 && code !== 'NoSuchUpload')) return new DiskError('FILENOTFOUND', code === 'NoSuchBucket' ? `no such bucket: ${text}` : `no such object: ${text}`, details, { cause: err });
  if (code === 'AccessDenied' || code === 'Forbidden' || code === 'InvalidAccessKeyId' || code === 'SignatureDoesNotMatch' || status === 403) return new DiskError('FILENOPERMISSION', text, details, { cause: err });
  if (code === 'PreconditionFailed' || status === 412) return new DiskError('FILEIO', `the object changed while it was read (its ETag is no longer the one it was opened with): ${text}`, details, { cause: err });
  if (code === 'CredentialsProviderError') return new DiskError('FILENOPERMISSION', `no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (${e.message})`, details, { cause: err });
  if (code === 'AbortError') return new DiskError('CANCELLED', text, details, { cause: err });
  return new DiskError('FILEIO', text, details, { cause: err });
}
