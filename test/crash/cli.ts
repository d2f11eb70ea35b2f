/**
 * npm run crash -- [--op write-alloc[,compact...]] [--format vhd[,qcow2...]] [--states N]
 *                  [--seed N] [--qemu N] [--json FILE]
 *
 * Runs the crash-state explorer (explore.ts) over operations x formats, N states each, and
 * prints one line per cell (states, distinct states, repairs needed, time) and each finding.
 * --qemu N: that many states per cell are also given to `qemu-img check` (when installed).
 * The exit code is 1 when there is a finding.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { exploreCell, formatCell, selectCells, type CellResult } from './explore.js';

const { values } = parseArgs({
  options: {
    op: { type: 'string' },
    format: { type: 'string' },
    states: { type: 'string', default: '200' },
    seed: { type: 'string', default: '1' },
    qemu: { type: 'string', default: '0' },
    json: { type: 'string' },
  },
});

const t0 = performance.now();
const cells: CellResult[] = [];
for (const [op, f] of selectCells(values.op?.split(','), values.format?.split(','))) {
  const c = await exploreCell(op, f, { states: Number(values.states), seed: Number(values.seed), qemuSample: Number(values.qemu), maxFindings: 50 });
  cells.push(c);
  console.log(formatCell(c));
}
const ran = cells.filter((c) => !c.skipped);
const findings = ran.reduce((n, c) => n + c.findings.length, 0);
console.log(
  `\n${ran.length} cells, ${cells.length - ran.length} skipped; ${ran.reduce((n, c) => n + c.states, 0)} states (${ran.reduce((n, c) => n + c.distinct, 0)} distinct), ${ran.reduce((n, c) => n + c.qemuChecked, 0)} qemu-img checks, ${findings} findings, ${((performance.now() - t0) / 1000).toFixed(1)} s`,
);
if (values.json) writeFileSync(values.json, JSON.stringify(cells, null, 2));
process.exitCode = findings > 0 ? 1 : 0;
