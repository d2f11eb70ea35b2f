import { spawn } from 'node:child_process';

/**
 * Run a node script, hand each stdout line to `onLine`, and SIGKILL the process as soon as
 * `onLine` returns true. Resolves with the lines seen and whether the process was killed;
 * rejects if it ended on its own with a failure.
 */
export function runKilledWhen(script: string, args: string[], onLine: (line: string, count: number) => boolean): Promise<{ lines: string[]; killed: boolean }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let buf = '';
    let err = '';
    p.stderr.on('data', (c) => (err += c));
    p.stdout.on('data', (c: Buffer) => {
      buf += c.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const l of parts) {
        lines.push(l);
        if (onLine(l, lines.length)) p.kill('SIGKILL');
      }
    });
    p.on('error', reject);
    p.on('close', (code, signal) => (signal === 'SIGKILL' || code === 0 ? resolve({ lines, killed: signal === 'SIGKILL' }) : reject(new Error(`${script} failed (${code}): ${err}`))));
  });
}

/**
 * Run a node script and SIGKILL it `delayMs` after it prints `ready` (a timer, so the kill lands
 * anywhere in the work, not only next to a printed line). Resolves with the lines, whether it
 * was killed, and the ms from `ready` to its end when it was not.
 */
export function runKilledAfter(script: string, args: string[], delayMs: number): Promise<{ lines: string[]; killed: boolean; ms: number }> {
  let readyAt = 0;
  let timer: NodeJS.Timeout | undefined;
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let buf = '';
    let err = '';
    p.stderr.on('data', (c) => (err += c));
    p.stdout.on('data', (c: Buffer) => {
      buf += c.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const l of parts) {
        lines.push(l);
        if (l === 'ready' && !readyAt) {
          readyAt = performance.now();
          if (delayMs <= 0) p.kill('SIGKILL');
          else if (Number.isFinite(delayMs)) timer = setTimeout(() => p.kill('SIGKILL'), delayMs);
        }
      }
    });
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL' || code === 0) resolve({ lines, killed: signal === 'SIGKILL', ms: performance.now() - readyAt });
      else reject(new Error(`${script} failed (${code}): ${err}`));
    });
  });
}
