/**
 * A fuzz worker process: runs the cases its parent sends (test/fuzz/pool.ts), one at a time, and
 * reports each result with the peak growth of its resident set during the case.
 */
import { runCase, type CaseSpec } from './case.js';

let peak = 0;
const sampler = setInterval(() => {
  peak = Math.max(peak, process.memoryUsage.rss());
}, 10);
sampler.unref();

/** an error thrown outside any awaited call (a background promise vdkit forgot) */
let stray: { kind: string; message: string; stack?: string } | undefined;
for (const ev of ['unhandledRejection', 'uncaughtException'] as const) {
  process.on(ev, (e: unknown) => {
    const err = e as Error;
    stray ??= { kind: ev, message: `${err?.name}: ${err?.message}`, stack: err?.stack };
  });
}

process.on('message', (msg: { type: 'case'; spec: CaseSpec }) => {
  if (msg.type !== 'case') return;
  void (async () => {
    const base = process.memoryUsage.rss();
    peak = base;
    try {
      stray = undefined;
      const result = await runCase(msg.spec);
      // give a late rejection one turn of the event loop to show itself
      await new Promise((r) => setImmediate(r));
      if (stray && !result.finding) result.finding = stray;
      peak = Math.max(peak, process.memoryUsage.rss());
      process.send!({ type: 'result', result, rssGrowth: peak - base });
    } catch (e) {
      // an error of the harness itself (not of vdkit): report it as such
      const err = e as Error;
      process.send!({ type: 'result', result: { id: msg.spec.id, outcome: 'fine', ms: 0, finding: { kind: 'harness', message: `${err?.name}: ${err?.message}`, stack: err?.stack } }, rssGrowth: 0 });
    }
  })();
});
process.on('disconnect', () => process.exit(0));
process.send!({ type: 'ready' });
