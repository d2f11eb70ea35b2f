/**
 * The fuzz loop: make the seeds, derive each case from (run seed, case index), run the cases in
 * worker processes, count outcomes per format, confirm hangs once, shrink each new finding to the
 * fewest mutations that still show it, and keep it as a named corpus case.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, extname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { materialise, pristine, type CaseResult, type CaseSpec } from './case.js';
import { caseSeed, generate, Rng, type Mutation } from './mutate.js';
import { Pool } from './pool.js';
import { FORMATS, makeSeeds, type Seed } from './seeds.js';

export interface FuzzOptions {
  formats?: readonly string[];
  cases: number;
  seed: number;
  /** ro, rw, or both (each case picks one) */
  mode: 'ro' | 'rw' | 'both';
  jobs: number;
  /** first case index (to replay a range) */
  first?: number;
  timeoutMs?: number;
  /** qemu-img check before and after repairs (when installed) */
  long?: boolean;
  qemuSeeds?: boolean;
  outsideSeeds?: boolean;
  /** keep findings here as corpus cases (test/corpus/fuzz); none when absent */
  corpusDir?: string;
  /** shrink findings (default true) */
  minimise?: boolean;
  /** most distinct findings to shrink and keep per run */
  maxKept?: number;
  log?: (line: string) => void;
  progressEvery?: number;
}

export interface KeptFinding {
  kind: string;
  message: string;
  step?: string;
  stack?: string;
  format: string;
  seedName: string;
  caseIndex: number;
  mutations: Mutation[];
  mode: 'ro' | 'rw';
  corpus?: string;
  /** how many cases showed a finding of this key */
  count: number;
}

export interface Summary {
  seed: number;
  mode: FuzzOptions['mode'];
  cases: number;
  ms: number;
  seeds: string[];
  perFormat: Record<string, { cases: number; outcomes: Record<string, number> }>;
  findings: KeptFinding[];
}

export function findingKey(format: string, kind: string, message: string): string {
  return `${format}|${kind}|${message.replace(/\d+/g, 'N').slice(0, 80)}`;
}

export async function fuzz(opts: FuzzOptions): Promise<Summary> {
  const log = opts.log ?? (() => {});
  const t0 = performance.now();
  const root = mkdtempSync(join(tmpdir(), 'vdkit-fuzz-'));
  const pool = new Pool({ jobs: opts.jobs, timeoutMs: opts.timeoutMs });
  try {
    const seeds = await makeSeeds(join(root, 'seeds'), { seed: opts.seed, formats: opts.formats, qemu: opts.qemuSeeds, outside: opts.outsideSeeds, log });
    const formats = FORMATS.filter((f) => (!opts.formats || opts.formats.includes(f)) && seeds.some((s) => s.format === f));
    log(`${seeds.length} seeds: ${seeds.map((s) => s.name).join(', ')}`);
    const scratch = join(root, 'cases');
    mkdirSync(scratch);
    const summary: Summary = { seed: opts.seed, mode: opts.mode, cases: 0, ms: 0, seeds: seeds.map((s) => s.name), perFormat: {}, findings: [] };
    const byKey = new Map<string, KeptFinding>();
    const first = opts.first ?? 0;
    let next = first;
    let lastLog = performance.now();
    const worker = async () => {
      for (;;) {
        const i = next++;
        if (i >= first + opts.cases) return;
        const spec = caseSpec(i, opts, seeds, formats, scratch);
        const r = await pool.run(spec);
        const pf = (summary.perFormat[spec.format] ??= { cases: 0, outcomes: {} });
        pf.cases++;
        summary.cases++;
        const label = r.finding ? `finding:${r.finding.kind}` : r.outcome;
        pf.outcomes[label] = (pf.outcomes[label] ?? 0) + 1;
        if (r.finding) {
          const key = findingKey(spec.format, r.finding.kind, r.finding.message);
          const seen = byKey.get(key);
          if (seen) seen.count++;
          else {
            const kept: KeptFinding = { ...r.finding, format: spec.format, seedName: spec.seedName, caseIndex: i, mutations: spec.mutations, mode: spec.mode, count: 1 };
            byKey.set(key, kept);
            summary.findings.push(kept);
            log(`FINDING ${r.finding.kind} (${spec.format}, ${spec.seedName}, ${spec.mode}, case ${i}): ${r.finding.message}${r.finding.step ? ` [step ${r.finding.step}]` : ''}`);
            if (opts.minimise !== false && summary.findings.length <= (opts.maxKept ?? 25)) {
              const small = await minimise(pool, spec, r.finding.kind);
              kept.mutations = small.mutations;
              // images derived from the outside set stay out of the repository (their reproduction is printed)
              const outside = seeds.find((x) => x.name === spec.seedName)?.source === 'outside';
              if (opts.corpusDir && !outside) kept.corpus = keep(opts.corpusDir, small, kept, join(root, 'keep'));
            }
          }
        }
        const every = opts.progressEvery ?? 500;
        if (summary.cases % every === 0 || performance.now() - lastLog > 10_000) {
          lastLog = performance.now();
          const s = (performance.now() - t0) / 1000;
          log(`${summary.cases}/${opts.cases} cases, ${summary.findings.length} distinct findings, ${(summary.cases / s).toFixed(1)} cases/s`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, opts.jobs) }, worker));
    summary.ms = performance.now() - t0;
    return summary;
  } finally {
    await pool.close();
    rmSync(root, { recursive: true, force: true });
  }
}

export function caseSpec(i: number, opts: Pick<FuzzOptions, 'seed' | 'mode' | 'long'>, seeds: Seed[], formats: readonly string[], scratch: string): CaseSpec {
  const rng = new Rng(caseSeed(opts.seed, i));
  const format = formats[i % formats.length]!;
  const seed = rng.pick(seeds.filter((s) => s.format === format));
  const mode = opts.mode === 'both' ? (rng.chance(0.4) ? 'rw' : 'ro') : opts.mode;
  const data = pristine(seed.dir);
  const files = seed.files.map((f) => ({ name: f.name, layout: f.layout, data: data.get(f.name)! }));
  const mutations = generate(rng, { files, main: seed.main }, mode === 'rw');
  return { id: i, seedName: seed.name, seedDir: seed.dir, format, main: seed.main, mutations, mode, rngSeed: rng.int(0, 2 ** 31), scratch, qemuCheck: opts.long };
}

/** Drop mutations one at a time while the finding (its kind) stays. */
async function minimise(pool: Pool, spec: CaseSpec, kind: string): Promise<CaseSpec> {
  let cur = spec;
  let changed = true;
  let runs = 0;
  while (changed && runs < 60) {
    changed = false;
    for (let i = cur.mutations.length - 1; i >= 0 && runs < 60; i--) {
      const tryIt: CaseSpec = { ...cur, id: cur.id + 1_000_000_000 + runs, mutations: cur.mutations.filter((_, j) => j !== i) };
      runs++;
      const r: CaseResult = await pool.run(tryIt);
      if (r.finding?.kind === kind) {
        cur = { ...tryIt, id: spec.id };
        changed = true;
      }
    }
  }
  return cur;
}

/** Write the mutated files of `spec` (gzip'd) and a JSON sidecar into <corpusDir>/<format>/. Returns the case name. */
function keep(corpusDir: string, spec: CaseSpec, f: KeptFinding, tmp: string): string {
  const dir = join(tmp, String(spec.id));
  const files = materialise(spec, dir);
  const h = createHash('sha256');
  for (const [n, b] of files) h.update(n).update(b);
  const name = `${f.kind}-${spec.seedName}-${h.digest('hex').slice(0, 6)}`;
  const out = join(corpusDir, spec.format);
  mkdirSync(out, { recursive: true });
  const stored: Record<string, string> = {};
  for (const [n, b] of files) {
    const gz = n === spec.main ? `${name}${extname(n)}.gz` : `${name}--${basename(n)}.gz`;
    writeFileSync(join(out, gz), gzipSync(b, { level: 9 }));
    stored[n] = gz;
  }
  const sidecar = {
    format: spec.format,
    main: spec.main,
    mode: spec.mode,
    rngSeed: spec.rngSeed,
    files: stored,
    found: { kind: f.kind, message: f.message, step: f.step, seed: spec.seedName, mutations: spec.mutations.map((m) => m.why) },
    // what must happen now: no finding, and (once fixed) this outcome
    expect: { finding: false } as { finding: false; outcome?: string },
  };
  writeFileSync(join(out, `${name}.json`), JSON.stringify(sidecar, null, 2) + '\n');
  rmSync(dir, { recursive: true, force: true });
  return `${spec.format}/${name}`;
}

export function formatSummary(s: Summary): string {
  const lines = [`fuzz seed ${s.seed}: ${s.cases} cases in ${(s.ms / 1000).toFixed(1)} s (${(s.cases / (s.ms / 1000)).toFixed(1)} cases/s)`];
  for (const [f, p] of Object.entries(s.perFormat)) {
    const outs = Object.entries(p.outcomes)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
    lines.push(`  ${f.padEnd(6)} ${String(p.cases).padStart(7)} cases: ${outs}`);
  }
  lines.push(`${s.findings.length} distinct findings`);
  for (const f of s.findings) {
    lines.push(`  ${f.kind} x${f.count} (${f.format}, seed image ${f.seedName}, ${f.mode}): ${f.message}`);
    lines.push(`    reproduce: npm run fuzz -- --format ${f.format} --seed ${s.seed} --mode ${s.mode} --first ${f.caseIndex} --cases 1${f.corpus ? `   kept as test/corpus/fuzz/${f.corpus}` : ''}`);
    lines.push(`    mutations: ${f.mutations.map((m) => m.why).join(' | ')}`);
    if (f.stack) lines.push(`    ${f.stack.split('\n').slice(0, 4).join('\n    ')}`);
  }
  return lines.join('\n');
}

/** read a kept case's sidecar */
export function readSidecar(path: string): { format: string; main: string; mode: 'ro' | 'rw'; rngSeed: number; files: Record<string, string>; found?: { kind: string }; expect: { finding: false; outcome?: string } } {
  return JSON.parse(readFileSync(path, 'utf8'));
}
