import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runAll } from '../../src/core/errors.js';

test('runAll runs every step though one fails, then throws the first failure', async () => {
  const ran: number[] = [];
  const steps = [0, 1, 2, 3].map((i) => async () => {
    ran.push(i);
    if (i === 1 || i === 2) throw new Error(`step ${i}`);
  });
  await assert.rejects(runAll(steps), /step 1/);
  assert.deepEqual(ran, [0, 1, 2, 3]);
  await runAll([() => undefined, async () => {}]);
});
