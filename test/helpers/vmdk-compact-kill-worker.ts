/**
 * Child process for the compact/defragment kill tests: `compact PATH` or `defrag PATH`. It
 * loads, prints `ready`, waits for a line on stdin (so the test can start it ahead of time,
 * while it still checks the previous run), runs the operation once and prints `done`; the test
 * kills it (SIGKILL) after a random delay.
 */
import { once } from 'node:events';
import { compact, defragment } from '../../src/index.js';

const [op, path] = process.argv.slice(2) as [string, string];
console.log('ready');
await once(process.stdin, 'data');
if (op === 'compact') await compact(path);
else if (op === 'defrag') await defragment(path);
else throw new Error(`unknown op ${op}`);
console.log('done');
process.exit(0);
