/**
 * The messages between the page (web/app.ts) and the worker (web/worker.ts). Results are plain
 * JSON-able objects; files travel as File handles (structured clone passes the handle, not the
 * bytes), so the page and the worker read the same files and nothing is uploaded anywhere.
 */

export type Command = 'info' | 'check' | 'map' | 'checksum';

export type ToWorker =
  | { type: 'files'; files: { name: string; file: File }[] }
  | { type: 'run'; id: number; command: Command; top?: string }
  | { type: 'cancel'; id: number };

export interface LinkSummary {
  path: string;
  format: string;
  type: string;
  capacity: number;
  allocatedBytes: number;
  fileSize: number;
  files: string[];
  parent?: string;
  uuid?: string;
  clusterSize?: number;
}

export interface InfoResult {
  path: string;
  format: string;
  type: string;
  capacity: number;
  allocatedBytes: number;
  fileSize: number;
  clusterSize?: number;
  geometry?: { cylinders: number; heads: number; sectors: number };
  /** top first */
  chain: LinkSummary[];
  properties: Record<string, unknown>;
}

export interface CheckResult {
  path: string;
  format: string;
  corruptions: number;
  leaks: number;
  /** one sentence per finding, as `vdkit check` prints them */
  lines: string[];
  /** the files checked: the top, then its parents */
  checked: string[];
  /** "No errors were found on the image." or the counts */
  summary: string;
}

/** one run of the virtual disk: data, zero or unallocated (nothing in any link), and the link it comes from (0 = top) */
export interface MapRange {
  start: number;
  length: number;
  state: 'data' | 'zero' | 'unallocated';
  depth: number;
}

export interface MapResult {
  capacity: number;
  links: number;
  ranges: MapRange[];
}

export interface ChecksumResult {
  digest: string;
}

export type Result = { info: InfoResult; check: CheckResult; map: MapResult; checksum: ChecksumResult };

export type FromWorker =
  | { type: 'files'; names: string[]; tops: string[]; error?: string }
  | { type: 'progress'; id: number; done: number; total: number }
  | { type: 'result'; id: number; command: Command; result: Result[Command] }
  | { type: 'error'; id: number; command: Command; code: string; message: string };
