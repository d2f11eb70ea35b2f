/**
 * s3:// names, settings from the environment, upload sizing, and the SigV4 signer the SDK signs
 * with, checked against AWS's published vectors (s3rver accepts any signature, so the request
 * flow tests in test/interop/s3.test.ts recompute each signature with this same signer: this
 * file is what makes that signer a trustworthy judge).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseS3Url, isS3Url } from '../../src/storage/s3/url.js';
import { s3Settings } from '../../src/storage/s3/client.js';
import { uploadShape } from '../../src/storage/s3/upload.js';
import { isStagingName } from '../../src/storage/s3/namespace.js';
import { isLocationName } from '../../src/storage/locations.js';
import { partialPath } from '../../src/ops/partials.js';
import { DiskError } from '../../src/core/errors.js';
import { NodeSha256 } from '../helpers/s3.js';

test('s3:// names: bucket, key, display without the query; s3:/ (a folded name) reads the same', () => {
  const u = parseS3Url('s3://disks/a/b/../c.vmdk?path-style=1&region=eu-west-1&endpoint=http://127.0.0.1:9000');
  assert.equal(u.bucket, 'disks');
  assert.equal(u.key, 'a/c.vmdk');
  assert.equal(u.display, 's3://disks/a/c.vmdk');
  assert.equal(u.pathStyle, true);
  assert.equal(u.region, 'eu-west-1');
  assert.equal(u.endpoint, 'http://127.0.0.1:9000');
  assert.equal(parseS3Url('s3:/disks/x.raw').display, 's3://disks/x.raw');
  assert.equal(parseS3Url('s3://disks').display, 's3://disks');
  assert.equal(parseS3Url('s3://disks/%41b.raw').key, 'Ab.raw');
  // no climbing out of the bucket
  assert.equal(parseS3Url('s3://disks/../../etc/passwd').key, 'etc/passwd');
  assert.ok(isS3Url('S3://x/y') && !isS3Url('/s3/x'));
  assert.ok(isLocationName('s3://b/k'));
  // convert's hidden name beside an s3 target is still an s3 name, and a staging one
  const partial = partialPath('s3://disks/dir/out.qcow2', 123);
  assert.ok(isLocationName(partial), partial);
  assert.equal(parseS3Url(partial).display, 's3://disks/dir/.out.vdkit-partial-123.qcow2');
  assert.ok(isStagingName(partial) && !isStagingName('s3://disks/dir/out.qcow2'));
});

test('s3:// names refuse credentials, unknown parameters and bad endpoints', () => {
  const refused = (name: string, field: string) =>
    assert.throws(
      () => parseS3Url(name),
      (e: unknown) => e instanceof DiskError && e.code === 'INVAL' && e.details.field === field && !String(e.message + JSON.stringify(e.details)).includes('hunter2'),
      name,
    );
  refused('s3://AKID:hunter2@disks/x', 'user');
  refused('s3://disks/x?pathstyle=1', 'pathstyle');
  refused('s3://disks/x?path-style=maybe', 'path-style');
  refused('s3://disks/x?endpoint=ftp://h', 'endpoint');
  refused('s3://disks/x?endpoint=http://u:hunter2@h', 'endpoint');
  refused('s3://d!sks/x', 'bucket');
});

test('settings: endpoint from the name, then AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL; path style on with an endpoint unless told', () => {
  const u = parseS3Url('s3://b/k');
  assert.deepEqual(s3Settings(u, {}), { endpoint: undefined, pathStyle: false, region: undefined });
  assert.deepEqual(s3Settings(u, { AWS_ENDPOINT_URL: 'http://a:1' }), { endpoint: 'http://a:1', pathStyle: true, region: undefined });
  assert.equal(s3Settings(u, { AWS_ENDPOINT_URL: 'http://a:1', AWS_ENDPOINT_URL_S3: 'http://s3:2' }).endpoint, 'http://s3:2');
  assert.equal(s3Settings(u, { AWS_ENDPOINT_URL: 'http://a:1', VDKIT_S3_PATH_STYLE: '0' }).pathStyle, false);
  assert.equal(s3Settings(u, { VDKIT_S3_PATH_STYLE: '1' }).pathStyle, true);
  const named = parseS3Url('s3://b/k?endpoint=http://n:3&path-style=0&region=r1');
  assert.deepEqual(s3Settings(named, { AWS_ENDPOINT_URL: 'http://a:1', VDKIT_S3_PATH_STYLE: '1' }), { endpoint: 'http://n:3', pathStyle: false, region: 'r1' });
});

test('upload shape: parts stay under 10,000 and buffers under ~160 MiB whatever the size', () => {
  const MiB = 1024 * 1024;
  for (const size of [0, 1, 5 * 1024 * MiB, 100 * 1024 * MiB, 4 * 1024 * 1024 * MiB]) {
    const { partSize, queueSize } = uploadShape(size);
    assert.ok(partSize >= 8 * MiB && partSize % MiB === 0, `${size}: part ${partSize}`);
    assert.ok(Math.ceil(size / partSize) <= 9000, `${size}: ${Math.ceil(size / partSize)} parts`);
    assert.ok(queueSize >= 1 && queueSize <= 4);
    assert.ok(partSize * queueSize <= 160 * MiB || queueSize === 1, `${size}: ${partSize} x ${queueSize}`);
  }
  assert.deepEqual(uploadShape(5 * 1024 * MiB), { partSize: 8 * MiB, queueSize: 4 });
});

/** the SDK's signer, as the SDK's S3 client configures it (no path escaping, payload hash from its header) */
async function sign(req: { method: string; host: string; path: string; query?: Record<string, string>; headers: Record<string, string> }, creds: { accessKeyId: string; secretAccessKey: string }, service: string, date: Date): Promise<string> {
  const { SignatureV4 } = await import('@smithy/signature-v4');
  const signer = new SignatureV4({ service, region: 'us-east-1', credentials: creds, sha256: NodeSha256, uriEscapePath: service !== 's3', applyChecksum: false });
  const signed = await signer.sign({ method: req.method, protocol: 'https:', hostname: req.host, path: req.path, query: req.query ?? {}, headers: { host: req.host, ...req.headers } } as never, { signingDate: date } as never);
  return String((signed as unknown as { headers: Record<string, string> }).headers.authorization);
}

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

test('SigV4: the SDK signer gives AWS published signatures (aws-sig-v4-test-suite get-vanilla; S3 GET Object and List Objects examples)', async () => {
  // aws-sig-v4-test-suite "get-vanilla"
  const suite = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
  assert.equal(
    await sign({ method: 'GET', host: 'example.amazonaws.com', path: '/', headers: {} }, suite, 'service', new Date('2015-08-30T12:36:00Z')),
    'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31',
  );
  // "get-vanilla-query-order-key-case": the query is sorted before signing
  assert.match(
    await sign({ method: 'GET', host: 'example.amazonaws.com', path: '/', query: { Param2: 'value2', Param1: 'value1' }, headers: {} }, suite, 'service', new Date('2015-08-30T12:36:00Z')),
    /Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500$/,
  );
  // S3 documentation, "Signature Calculations for the Authorization Header": GET Object with a Range
  const doc = { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' };
  const at = new Date('2013-05-24T00:00:00Z');
  assert.equal(
    await sign({ method: 'GET', host: 'examplebucket.s3.amazonaws.com', path: '/test.txt', headers: { range: 'bytes=0-9', 'x-amz-content-sha256': EMPTY_SHA256 } }, doc, 's3', at),
    'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
  );
  // ... and List Objects (GET /?max-keys=2&prefix=J)
  assert.match(
    await sign({ method: 'GET', host: 'examplebucket.s3.amazonaws.com', path: '/', query: { 'max-keys': '2', prefix: 'J' }, headers: { 'x-amz-content-sha256': EMPTY_SHA256 } }, doc, 's3', at),
    /Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7$/,
  );
  // a wrong secret does not give the published value (the check can fail)
  assert.doesNotMatch(
    await sign({ method: 'GET', host: 'examplebucket.s3.amazonaws.com', path: '/test.txt', headers: { range: 'bytes=0-9', 'x-amz-content-sha256': EMPTY_SHA256 } }, { ...doc, secretAccessKey: 'x' }, 's3', at),
    /f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41/,
  );
});
