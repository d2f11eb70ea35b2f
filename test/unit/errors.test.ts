/** The error table and DiskError (src/core/errors.ts): VixDiskLib-style codes, numbers and texts. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DiskError, ERROR_TABLE, errorText, fromSystemError, type ErrorCode } from '../../src/core/errors.js';
import * as api from '../../src/index.js';

const codes = Object.keys(ERROR_TABLE) as ErrorCode[];

test('every ERROR_TABLE row has a unique number, a text and an exit code', () => {
  const seen = new Map<number, string>();
  for (const code of codes) {
    const row = ERROR_TABLE[code];
    assert.ok(Number.isSafeInteger(row.number) && row.number >= 0, `${code}: number`);
    const dup = seen.get(row.number);
    assert.equal(dup, undefined, `${code} and ${dup} share number ${row.number}`);
    seen.set(row.number, code);
    assert.ok(typeof row.text === 'string' && row.text.length > 0, `${code}: text`);
    assert.ok(Number.isInteger(row.exitCode) && row.exitCode >= 0 && row.exitCode <= 255, `${code}: exitCode`);
    assert.match(code, /^[A-Z_]+$/);
  }
  assert.equal(ERROR_TABLE.SUCCESS.number, 0);
  assert.equal(ERROR_TABLE.SUCCESS.exitCode, 0);
  // numbers VixDiskLib itself defines (vix.h)
  assert.equal(ERROR_TABLE.INVAL.number, 16000);
  assert.equal(ERROR_TABLE.OUTOFRANGE.number, 16007);
  assert.equal(ERROR_TABLE.CID_MISMATCH.number, 16008);
  assert.equal(ERROR_TABLE.UNSUPPORTEDDISKVERSION.number, 16011);
  assert.ok(Object.isFrozen(ERROR_TABLE));
  assert.ok(Object.isFrozen(ERROR_TABLE.CORRUPT));
});

test('errorText(code) and errorText(number) give the row text', () => {
  for (const code of codes) {
    assert.equal(errorText(code), ERROR_TABLE[code].text);
    assert.equal(errorText(ERROR_TABLE[code].number), ERROR_TABLE[code].text);
  }
  assert.equal(errorText('OUTOFRANGE'), 'You have requested access to an area of the virtual disk that is out of bounds');
  assert.equal(errorText(16007), errorText('OUTOFRANGE'));
  assert.equal(errorText(123456), 'Unknown error 123456');
  assert.equal(errorText('NOSUCHCODE' as ErrorCode), 'Unknown error NOSUCHCODE');
});

test('DiskError carries code, number, details; its message names path, struct.field, expected and found', () => {
  const e = new DiskError('CORRUPT', 'invalid grain size', {
    path: '/d/disk.vmdk',
    struct: 'SparseExtentHeader',
    field: 'grainSize',
    expected: 'a power of two',
    found: 3n,
  });
  assert.ok(e instanceof Error);
  assert.ok(e instanceof DiskError);
  assert.equal(e.name, 'DiskError');
  assert.equal(e.code, 'CORRUPT');
  assert.equal(e.number, 17000);
  assert.equal(e.exitCode, 1);
  assert.equal(e.details.field, 'grainSize');
  assert.equal(e.message, '/d/disk.vmdk: SparseExtentHeader.grainSize: invalid grain size (expected "a power of two", found 3)');
  const json = e.toJSON();
  assert.equal(json.code, 'CORRUPT');
  assert.equal(json.number, 17000);
  assert.equal(json.message, e.message);
  assert.deepEqual(json.details, e.details);
  // JSON round trip works (bigint in details must not break the message, only JSON.stringify would)
  assert.equal(new DiskError('CANCELLED').exitCode, 130);
});

test('DiskError without a message uses the table text; field alone is named too', () => {
  const e = new DiskError('OUTOFRANGE');
  assert.equal(e.message, ERROR_TABLE.OUTOFRANGE.text);
  const f = new DiskError('BADDESCRIPTOR', 'bad CID', { path: 'x.vmdk', field: 'CID', found: 'zz' });
  assert.equal(f.message, 'x.vmdk: CID: bad CID (found "zz")');
  const cause = new Error('inner');
  const g = new DiskError('FILEIO', undefined, {}, { cause });
  assert.equal(g.cause, cause);
});

test('fromSystemError maps errno codes and keeps the cause and path', () => {
  const mk = (code: string) => Object.assign(new Error(code), { code, path: '/p' });
  const cases: [string, ErrorCode][] = [
    ['ENOENT', 'FILENOTFOUND'],
    ['EACCES', 'FILENOPERMISSION'],
    ['EEXIST', 'FILEEXISTS'],
    ['ENOSPC', 'NOSPACE'],
    ['EROFS', 'RDONLY'],
    ['EIO', 'FILEIO'],
  ];
  for (const [errno, code] of cases) {
    const sys = mk(errno);
    const e = fromSystemError(sys, '/given');
    assert.equal(e.code, code, errno);
    assert.equal(e.details.path, '/given');
    assert.equal(e.cause, sys);
    assert.match(e.message, new RegExp(errno));
  }
  assert.equal(fromSystemError(mk('ENOENT')).details.path, '/p');
  const de = new DiskError('CORRUPT');
  assert.equal(fromSystemError(de), de);
});

test('the public surface re-exports the error API', () => {
  assert.equal(api.DiskError, DiskError);
  assert.equal(api.ERROR_TABLE, ERROR_TABLE);
  assert.equal(api.errorText, errorText);
});
