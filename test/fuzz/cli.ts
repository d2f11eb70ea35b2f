/**
 * npm run fuzz -- [--format vhd[,vdi...]] [--cases N] [--seed N] [--rw | --mode ro|rw|both]
 *                 [--jobs N] [--first I] [--long] [--keep] [--no-qemu-seeds] [--no-outside]
 *                 [--timeout MS] [--json FILE]
 *
 * --keep writes each new finding, shrunk, as a corpus case under test/corpus/fuzz/<format>/.
 * --long also runs qemu-img check before and after each repair (a repair must not make it worse).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from '../helpers/tools.js';
import { formatSummary, fuzz } from './engine.js';

const { values } = parseArgs({
  options: {
    format: { type: 'string' },
    cases: { type: 'string', default: '1000' },
    seed: { type: 'string', default: '1' },
    rw: { type: 'boolean', default: false },
    mode: { type: 'string' },
    jobs: { type: 'string', default: '2' },
    first: { type: 'string', default: '0' },
    long: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    'no-qemu-seeds': { type: 'boolean', default: false },
    'no-outside': { type: 'boolean', default: false },
    timeout: { type: 'string', default: '1000' },
    json: { type: 'string' },
  },
});

const mode = (values.mode ?? (values.rw ? 'rw' : 'ro')) as 'ro' | 'rw' | 'both';
if (!['ro', 'rw', 'both'].includes(mode)) throw new Error(`--mode: ro, rw or both, not ${mode}`);
const summary = await fuzz({
  formats: values.format?.split(','),
  cases: Number(values.cases),
  seed: Number(values.seed),
  mode,
  jobs: Number(values.jobs),
  first: Number(values.first),
  long: values.long,
  qemuSeeds: !values['no-qemu-seeds'],
  outsideSeeds: !values['no-outside'],
  timeoutMs: Number(values.timeout),
  corpusDir: values.keep ? join(repoRoot(), 'test', 'corpus', 'fuzz') : undefined,
  log: (l) => console.log(l),
});
console.log(formatSummary(summary));
if (values.json) writeFileSync(values.json, JSON.stringify(summary, null, 2));
process.exitCode = summary.findings.length ? 1 : 0;
