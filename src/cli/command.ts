/**
 * What every command module under cli/commands/ exports, and the little state they share.
 * main.ts loads a command module to parse a command line that names it, and all of them for
 * `vdkit --help`, so a command module imports only commander, core/errors and core/ints, options.ts,
 * output.ts, this file and types; what it runs (Disk, the drivers, ops/) is imported inside its
 * action, when it runs (test/conformance/cli-startup.test.ts checks this for --help).
 */
import type { Command, Option, OptionValues } from 'commander';
import type { Disk, DiskOpenOptions } from '../disk.js';
import { openOpts } from './options.js';

export interface CliCommand {
  readonly name: string;
  readonly aliases?: readonly string[];
  /** one line for `vdkit --help` */
  readonly summary: string;
  /** the arguments and options of the command and its action, on `cmd` (already named, aliased and described) */
  define(cmd: Command): unknown;
}

/** Add `c` to `program`. */
export function register(program: Command, c: CliCommand): Command {
  const cmd = program.command(c.name).description(c.summary);
  for (const a of c.aliases ?? []) cmd.alias(a);
  c.define(cmd);
  return cmd;
}

/** a command's exit status when it finished but wants to say more than success (check: 2, 3) */
let exitStatus = 0;

export function setExitStatus(n: number): void {
  exitStatus = n;
}

export function getExitStatus(): number {
  return exitStatus;
}

/** the signal that cancelled the running command, if one did (main.ts exits 128 + its number) */
let cancelledBy: 'SIGINT' | 'SIGTERM' | undefined;

export function cancelledBySignal(): 'SIGINT' | 'SIGTERM' | undefined {
  return cancelledBy;
}

/** forget an earlier run's cancellation (main() may run more than once in a process: the tests) */
export function clearCancelled(): void {
  cancelledBy = undefined;
}

/**
 * Ctrl-C (SIGINT) or SIGTERM while a long command runs aborts `signal`: the op stops at its
 * next check and removes what it half made (convert's hidden partial file), where Node's default
 * would kill the process and leave it. `end()` gives the signals back to Node's default; so does
 * the first signal, so that a second Ctrl-C kills a command that does not stop.
 */
export function cancelOnSignals(): { readonly signal: AbortSignal; end(): void } {
  const ac = new AbortController();
  const onInt = () => cancel('SIGINT');
  const onTerm = () => cancel('SIGTERM');
  const end = () => {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  };
  const cancel = (sig: 'SIGINT' | 'SIGTERM') => {
    cancelledBy = sig;
    end();
    ac.abort(new Error(`cancelled by ${sig}`));
  };
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return { signal: ac.signal, end };
}

/** `fn` with cancelOnSignals() around it */
export async function cancellable<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const c = cancelOnSignals();
  try {
    return await fn(c.signal);
  } finally {
    c.end();
  }
}

export async function withDisk<T>(path: string, opts: DiskOpenOptions & { readOnly: boolean }, fn: (d: Disk) => Promise<T>): Promise<T> {
  const { Disk } = await import('../disk.js');
  const d = await Disk.open(path, opts);
  try {
    return await fn(d);
  } finally {
    await d.close();
  }
}

/** what a disk command's action sees: its options, FILE, the arguments after FILE and what `parse` made of them */
export interface DiskRun<P> {
  readonly o: OptionValues;
  readonly file: string;
  readonly args: readonly (string | undefined)[];
  readonly p: P;
}

/**
 * A command that opens the disk FILE (its first argument) and works on it. Most commands are
 * this shape: the shared open options, their own options, `<file>`, and an action that opens the
 * disk with the open options, runs, and closes the disk whatever happens.
 */
export interface DiskCommandSpec<P> {
  readonly name: string;
  readonly aliases?: readonly string[];
  readonly summary: string;
  /** every option in `--help` order: a shared set (readingOptions(), writingOptions()) first */
  readonly options: readonly Option[];
  /** arguments after `<file>` */
  readonly args?: readonly string[];
  readonly readOnly: boolean;
  /** checks and converts the command line before the disk is opened, so a usage error wins over a bad file */
  parse?(o: OptionValues, file: string): P | Promise<P>;
  /** open options beyond the shared ones (they may override readOnly) */
  openOptions?(r: DiskRun<P>): Partial<DiskOpenOptions> & { readOnly?: boolean };
  run(d: Disk, r: DiskRun<P>): Promise<void>;
}

/** a name with a scheme (storage/locations.ts claims these), not a host path */
const URL_NAME = /^[a-z][a-z0-9+.-]*:\/\//i;

export function diskCommand<P = undefined>(spec: DiskCommandSpec<P>): CliCommand {
  return {
    name: spec.name,
    aliases: spec.aliases,
    summary: spec.summary,
    define: (cmd) => {
      for (const o of spec.options) cmd.addOption(o);
      for (const a of ['<file>', ...(spec.args ?? [])]) cmd.argument(a);
      return cmd.action(async (file: string, ...rest: unknown[]) => {
        // commander passes the declared arguments, then the option values, then the command
        const args = rest.slice(0, -2) as (string | undefined)[];
        const o = rest[rest.length - 2] as OptionValues;
        const r: DiskRun<P> = { o, file, args, p: spec.parse ? await spec.parse(o, file) : (undefined as P) };
        // a URL (nbd://...?tls-psk-file=...) is printed as the disk names itself: without credentials
        await withDisk(file, { readOnly: spec.readOnly, ...openOpts(o), ...spec.openOptions?.(r) }, (d) => spec.run(d, URL_NAME.test(file) ? { ...r, file: d.path } : r));
      });
    },
  };
}
