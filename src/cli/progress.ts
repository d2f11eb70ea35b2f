/**
 * The one progress display of every command with `-p/--progress` (and convert's
 * `--json-progress`), on stderr. The ops already thin their reports (core/progress.ts: about
 * every 100 ms and 1 %), so each report is drawn as it comes, in one of three forms:
 * - on a terminal, a bar redrawn in place: `\r`, the text, then "erase to the end of the line"
 *   (a shorter text after a longer one leaves nothing of it: "ETA 9s" after "ETA 10s" is not
 *   "ETA 9ss"), and a newline when the command ends;
 * - on anything else (a log, a CI job, a pipe), qemu-img's plain `    (12.00/100%)`, one line per
 *   whole per cent at most, so the file holds lines rather than one line of carriage returns;
 * - `json`: one JSON object per report, for scripts.
 */
import { humanBytes } from './output.js';

export type ProgressMode = 'bar' | 'lines' | 'json';

/** where the progress goes (process.stderr, or a test's recorder) */
export interface ProgressStream {
  write(s: string): unknown;
  readonly isTTY?: boolean;
}

export interface ProgressReporterOptions {
  mode: ProgressMode;
  /** default process.stderr */
  stream?: ProgressStream;
  /** the clock for rate and ETA, in ms (default Date.now) */
  now?: () => number;
}

/** one report: virtual bytes done of total, and (convert) the bytes written to the target */
export interface ProgressReport {
  readonly done: number;
  readonly total: number;
  readonly written?: number;
}

/** ANSI "erase in line", from the cursor to the end */
const ERASE_TO_END = '\x1b[K';

export class ProgressReporter {
  readonly mode: ProgressMode;
  private readonly stream: ProgressStream;
  private readonly now: () => number;
  private readonly started: number;
  /** a bar is on the line, so end() owes it a newline */
  private drawn = false;
  /** the whole per cent of the last plain line (-1: none yet) */
  private lastWhole = -1;

  constructor(opts: ProgressReporterOptions) {
    this.mode = opts.mode;
    this.stream = opts.stream ?? process.stderr;
    this.now = opts.now ?? Date.now;
    this.started = this.now();
  }

  /** the report of an op's `onProgress` */
  readonly update = (p: ProgressReport): void => {
    const percent = p.total > 0 ? Math.min(100, (100 * p.done) / p.total) : 100;
    if (this.mode === 'json') {
      const seconds = (this.now() - this.started) / 1000;
      this.stream.write(JSON.stringify({ done: p.done, total: p.total, written: p.written, percent, bytesPerSecond: seconds > 0 ? Math.round(p.done / seconds) : 0 }) + '\n');
    } else if (this.mode === 'lines') {
      const whole = Math.floor(percent);
      if (whole <= this.lastWhole) return;
      this.lastWhole = whole;
      this.stream.write(`    (${percent.toFixed(2)}/100%)\n`);
    } else {
      this.stream.write(`\r${progressBar(p.done, p.total, (this.now() - this.started) / 1000)}${ERASE_TO_END}`);
      this.drawn = true;
    }
  };

  /** the (done, total) form of the in-place operations */
  readonly counts = (done: number, total: number): void => this.update({ done, total });

  /** the command is over (done, failed or cancelled): the bar's line is ended */
  end(): void {
    if (this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}

/**
 * The reporter a command's options ask for: `--json-progress` JSON lines, `-p` a bar on a
 * terminal and plain lines elsewhere; undefined when neither is given.
 */
export function progressFromOptions(o: { progress?: unknown; jsonProgress?: unknown }, stream: ProgressStream = process.stderr): ProgressReporter | undefined {
  if (o.jsonProgress) return new ProgressReporter({ mode: 'json', stream });
  if (o.progress) return new ProgressReporter({ mode: stream.isTTY ? 'bar' : 'lines', stream });
  return undefined;
}

/** `[#####.....]  45.0%  12 MiB/s  ETA 3s`, after `seconds` of work */
export function progressBar(done: number, total: number, seconds: number, width = 30): string {
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  const filled = Math.round(frac * width);
  const rate = seconds > 0 ? done / seconds : 0;
  const eta = rate > 0 ? Math.max(0, total - done) / rate : 0;
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(frac * 100).toFixed(1).padStart(5)}%  ${humanBytes(Math.round(rate))}/s  ETA ${eta.toFixed(0)}s`;
}
