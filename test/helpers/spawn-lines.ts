import { spawn } from 'node:child_process';

/**
 * Spawn a node script and hand each stdout line to `onLine` (with a way to kill the process).
 * Resolves when it ends killed or with exit 0; rejects if it failed on its own.
 */
function spawnLines(script: string, args: string[], onLine: (line: string, lines: string[], kill: () => void) => void, onEnd?: () => void): Promise<{ lines: string[]; killed: boolean }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    const kill = () => p.kill('SIGKILL');
    let buf = '';
    let err = '';
    p.stderr.on('data', (c) => (err += c));
    p.stdout.on('data', (c: Buffer) => {
      buf += c.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const l of parts) {
        lines.push(l);
        onLine(l, lines, kill);
      }
    });
    p.on('error', reject);
    p.on('close', (code, signal) => {
      onEnd?.();
      if (signal === 'SIGKILL' || code === 0) resolve({ lines, killed: signal === 'SIGKILL' });
      else reject(new Error(`${script} failed (${code}): ${err}`));
    });
  });
}

/**
 * Run a node script, hand each stdout line to `onLine`, and SIGKILL the process as soon as
 * `onLine` returns true. Resolves with the lines seen and whether the process was killed;
 * rejects if it ended on its own with a failure.
 */
export function runKilledWhen(script: string, args: string[], onLine: (line: string, count: number) => boolean): Promise<{ lines: string[]; killed: boolean }> {
  return spawnLines(script, args, (l, lines, kill) => {
    if (onLine(l, lines.length)) kill();
  });
}

/** Run a node script and SIGKILL it when it prints `step <killAt>` (file-steps.ts; never for Infinity). */
export function runKilledAtStep(script: string, args: string[], killAt: number): Promise<{ lines: string[]; killed: boolean }> {
  return runKilledWhen(script, args, (l) => l === `step ${killAt}`);
}

/**
 * Run a node script and SIGKILL it `delayMs` after it prints `ready` (a timer, so the kill lands
 * anywhere in the work, not only next to a printed line). Resolves with the lines, whether it
 * was killed, and the ms from `ready` to its end when it was not.
 */
export async function runKilledAfter(script: string, args: string[], delayMs: number): Promise<{ lines: string[]; killed: boolean; ms: number }> {
  let readyAt = 0;
  let endAt = 0;
  let timer: NodeJS.Timeout | undefined;
  const r = await spawnLines(
    script,
    args,
    (l, _lines, kill) => {
      if (l !== 'ready' || readyAt) return;
      readyAt = performance.now();
      if (delayMs <= 0) kill();
      else if (Number.isFinite(delayMs)) timer = setTimeout(kill, delayMs);
    },
    () => {
      clearTimeout(timer);
      endAt = performance.now();
    },
  );
  return { ...r, ms: endAt - readyAt };
}
