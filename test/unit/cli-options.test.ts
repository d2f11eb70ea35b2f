import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TARGET_NAMES } from '../../src/cli/options.js';
import { TARGETS } from '../../src/ops/targets.js';

// options.ts spells the target names out so that `vdkit --help` need not load ops/targets.ts
// (and with it every driver); a target added there must show in the help of convert and lint.
test('cli TARGET_NAMES lists the target profiles of ops/targets.ts, in order', () => {
  assert.deepEqual([...TARGET_NAMES], Object.keys(TARGETS));
});
