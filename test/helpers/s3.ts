/**
 * A local S3 for tests: s3rver (an S3-compatible server on files) behind a small front server
 * in this process, both on 127.0.0.1 at free ports, stopped by `stop()`.
 *
 * Why s3rver: it is on npm (no MinIO in Debian, radosgw is heavy), runs in-process, and speaks
 * the requests vdkit uses: HEAD, ranged GET, ListObjectsV2, PUT, multipart create/part/complete,
 * copy and delete. What it lacks the front server adds, working on s3rver's own folder:
 * - AbortMultipartUpload (DELETE ?uploadId=) and ListMultipartUploads (GET ?uploads), so tests
 *   can see that an interrupted upload leaves no pending parts;
 * - signature checking: s3rver accepts any signature, so the front server recomputes each
 *   request's SigV4 signature with the SDK's signer (@smithy/signature-v4, itself checked against
 *   AWS's published vectors in the unit test) from the secret the test set, and refuses a
 *   mismatch with 403 SignatureDoesNotMatch, as S3 does.
 * - `faults`: a hook a test uses to change or hold replies (a replaced object mid-read).
 */
import { createHash, createHmac } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';

export const ACCESS_KEY = 'S3RVER';
export const SECRET_KEY = 'S3RVER';
export const REGION = 'us-east-1';

const bytes = (d: string | ArrayBuffer | ArrayBufferView): string | Uint8Array => (typeof d === 'string' ? d : d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength));

/** node:crypto as the signer's hash: sha256, or HMAC-sha256 when given a secret */
export class NodeSha256 {
  private readonly h;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.h = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.h.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.h.digest());
  }
  reset(): void {}
}

export interface LocalS3 {
  endpoint: string;
  directory: string;
  /** requests seen, e.g. "GET /b/k?..." */
  log: string[];
  /** signature checks done, and failures (each a message) */
  signatures: { checked: number; bad: string[] };
  /** env for a child CLI (and for `process.env` in-process) */
  env: NodeJS.ProcessEnv;
  /** called before a request is forwarded; return true when it answered the request itself */
  fault?: (req: IncomingMessage, res: ServerResponse, body: Buffer) => boolean | Promise<boolean>;
  pendingUploads(bucket: string): Promise<{ key: string; uploadId: string }[]>;
  stop(): Promise<void>;
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function xml(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'application/xml' });
  res.end(`<?xml version="1.0" encoding="UTF-8"?>\n${body}`);
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export async function startLocalS3(buckets: string[] = ['disks']): Promise<LocalS3> {
  const require = createRequire(import.meta.url);
  const S3rver = require('s3rver');
  const { SignatureV4 } = await import('@smithy/signature-v4');
  const directory = await mkdtemp(join(tmpdir(), 'vdkit-s3rver-'));
  const backend = new S3rver({ address: '127.0.0.1', port: 0, directory, silent: true, configureBuckets: buckets.map((name) => ({ name })) });
  const { port: backPort } = await backend.run();
  const uploadsDir = (bucket: string) => join(directory, bucket, '._S3rver_uploads');
  const signer = new SignatureV4({ service: 's3', region: REGION, credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY }, sha256: NodeSha256, uriEscapePath: false, applyChecksum: false });

  const s3: LocalS3 = {
    endpoint: '',
    directory,
    log: [],
    signatures: { checked: 0, bad: [] },
    env: {},
    async pendingUploads(bucket) {
      const ids = await readdir(uploadsDir(bucket)).catch(() => [] as string[]);
      return Promise.all(ids.map(async (uploadId) => ({ uploadId, key: await readFile(join(uploadsDir(bucket), uploadId, 'key'), 'utf8').catch(() => '?') })));
    },
    async stop() {
      await new Promise<void>((resolve) => front.close(() => resolve()));
      front.closeAllConnections?.();
      await backend.close();
      await rm(directory, { recursive: true, force: true });
    },
  };

  const checkSignature = async (req: IncomingMessage, url: URL): Promise<string | undefined> => {
    const auth = req.headers.authorization;
    if (!auth) return undefined; // an anonymous request: s3rver would serve it; vdkit never sends one
    const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
    if (!m) return `unreadable Authorization: ${auth}`;
    if (m[1] !== ACCESS_KEY) return `access key ${m[1]}`;
    const signed = m[4]!.split(';');
    const headers: Record<string, string> = {};
    for (const h of signed) {
      const v = req.headers[h];
      if (v === undefined) return `signed header ${h} missing`;
      headers[h] = Array.isArray(v) ? v.join(',') : v;
    }
    const query: Record<string, string | string[]> = {};
    for (const [k, v] of url.searchParams) query[k] = k in query ? ([] as string[]).concat(query[k]!, v) : v;
    const amzDate = headers['x-amz-date'] ?? '';
    const date = new Date(`${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 8)}T${amzDate.slice(9, 11)}:${amzDate.slice(11, 13)}:${amzDate.slice(13, 15)}Z`);
    const again = await signer.sign(
      { method: req.method!, protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: url.pathname, query, headers, body: undefined } as never,
      { signingDate: date, signingRegion: m[3], unsignableHeaders: new Set(), signableHeaders: new Set(signed) } as never,
    );
    const expected = /Signature=([0-9a-f]{64})/.exec(String((again as unknown as { headers: Record<string, string> }).headers.authorization))?.[1];
    return expected === m[5] ? undefined : `${req.method} ${url.pathname}: signature ${m[5]} is not ${expected}`;
  };

  const front = createServer(async (req, res) => {
    const url = new URL(req.url!, `http://${req.headers.host}`);
    s3.log.push(`${req.method} ${url.pathname}${url.search}`);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const bad = await checkSignature(req, url).catch((e: Error) => `signer failed: ${e.message}`);
    if (req.headers.authorization) s3.signatures.checked++;
    if (bad) {
      s3.signatures.bad.push(bad);
      return xml(res, 403, `<Error><Code>SignatureDoesNotMatch</Code><Message>${esc(bad)}</Message></Error>`);
    }
    if (s3.fault && (await s3.fault(req, res, body))) return;
    const [, bucket, ...rest] = url.pathname.split('/');
    const keyParts = rest.filter((p) => p !== '');
    if (req.method === 'GET' && url.searchParams.has('uploads') && keyParts.length === 0) {
      const ups = await s3.pendingUploads(decodeURIComponent(bucket!));
      return xml(res, 200, `<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${esc(bucket!)}</Bucket><IsTruncated>false</IsTruncated>${ups.map((u) => `<Upload><Key>${esc(u.key)}</Key><UploadId>${u.uploadId}</UploadId></Upload>`).join('')}</ListMultipartUploadsResult>`);
    }
    if (req.method === 'DELETE' && url.searchParams.has('uploadId')) {
      const id = url.searchParams.get('uploadId')!;
      if (!/^[0-9a-f]+$/.test(id) || !(await s3.pendingUploads(decodeURIComponent(bucket!))).some((u) => u.uploadId === id)) {
        return xml(res, 404, `<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>`);
      }
      await rm(join(uploadsDir(decodeURIComponent(bucket!)), id), { recursive: true, force: true });
      res.writeHead(204);
      return res.end();
    }
    const headers = { ...req.headers, 'content-length': String(body.length) };
    delete headers['transfer-encoding'];
    const fwd = httpRequest({ host: '127.0.0.1', port: backPort, method: req.method, path: req.url, headers }, (r) => {
      res.writeHead(r.statusCode!, r.headers);
      r.pipe(res);
    });
    fwd.on('error', (e) => {
      res.destroy(e);
    });
    fwd.end(body);
  });
  const port = await listen(front);
  s3.endpoint = `http://127.0.0.1:${port}`;
  s3.env = {
    AWS_ACCESS_KEY_ID: ACCESS_KEY,
    AWS_SECRET_ACCESS_KEY: SECRET_KEY,
    AWS_REGION: REGION,
    AWS_ENDPOINT_URL: s3.endpoint,
    // no shared config of the machine's user leaks in
    AWS_CONFIG_FILE: join(directory, 'no-config'),
    AWS_SHARED_CREDENTIALS_FILE: join(directory, 'no-credentials'),
    AWS_PROFILE: '',
    // the SDK's notice that its 2027 releases need Node 22 (vdkit pins its version)
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
  return s3;
}
