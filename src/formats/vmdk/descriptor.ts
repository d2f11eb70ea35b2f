/**
 * The VMDK text descriptor (NOTES.md §2). We keep every line as read, so that a rewrite
 * (new CID, a metadata key) changes only the lines it must and keeps comments, unknown
 * header keys and unknown ddb keys exactly as another producer wrote them.
 *
 * Keys are matched case-insensitively (the technote says descriptors are case-insensitive)
 * but written in the canonical case, because QEMU and VirtualBox match case-sensitively.
 */
import { DiskError } from '../../core/errors.js';

export const MAX_DESCRIPTOR_BYTES = 1024 * 1024; // QEMU's bound; VirtualBox reads 128 KiB
const MAX_LINES = 20000;
/**
 * 8 TiB (the hosted maximum) in VMware's 2 GiB extents is 4097 lines; each line opens and
 * parses a file, so the cap bounds an open's work (issue 14: 5,000 lines took seconds)
 */
export const MAX_EXTENTS = 4200;

export type ExtentAccess = 'RW' | 'RDONLY' | 'NOACCESS';
export type ExtentType = 'FLAT' | 'SPARSE' | 'ZERO' | 'VMFS' | 'VMFSSPARSE' | 'VMFSRDM' | 'VMFSRAW' | 'SESPARSE';
const EXTENT_TYPES: readonly string[] = ['FLAT', 'SPARSE', 'ZERO', 'VMFS', 'VMFSSPARSE', 'VMFSRDM', 'VMFSRAW', 'SESPARSE'];

export interface ExtentLine {
  access: ExtentAccess;
  sectorCount: number;
  type: ExtentType;
  /** file name as written (relative to the descriptor's folder unless absolute) */
  fileName?: string;
  /** FLAT only: start of the extent inside its file, in sectors */
  offsetSectors: number;
}

type Line =
  | { kind: 'text'; raw: string }
  | { kind: 'header'; raw: string; key: string; value: string }
  | { kind: 'extent'; raw: string; extent: ExtentLine }
  | { kind: 'ddb'; raw: string; key: string; value: string };

const HEADER_RE = /^([A-Za-z][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*$/;
const DDB_RE = /^ddb\.([^\s=]+)\s*=\s*(.*?)\s*$/i;
const EXTENT_RE = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Za-z]+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?(?:\s.*)?$/;

function unquote(v: string): string {
  if (v.length >= 2 && ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'")))) return v.slice(1, -1);
  if (v.startsWith('"')) {
    const end = v.indexOf('"', 1);
    if (end > 0) return v.slice(1, end);
  }
  return v;
}

/** Header keys written without quotes (QEMU needs `CID=` and `version=` bare). */
const UNQUOTED_KEYS = new Set(['version', 'cid', 'parentcid']);

export class Descriptor {
  private lines: Line[];

  private constructor(lines: Line[]) {
    this.lines = lines;
  }

  static parse(text: string, path?: string): Descriptor {
    if (text.length > MAX_DESCRIPTOR_BYTES) {
      throw new DiskError('BADDESCRIPTOR', 'descriptor is too large', { path, field: 'descriptor', expected: `<= ${MAX_DESCRIPTOR_BYTES} bytes`, found: text.length });
    }
    const rawLines = text.split('\n');
    if (rawLines.length > MAX_LINES) throw new DiskError('BADDESCRIPTOR', 'descriptor has too many lines', { path, found: rawLines.length });
    if (rawLines.length > 0 && rawLines[rawLines.length - 1] === '') rawLines.pop();
    const lines: Line[] = [];
    let extents = 0;
    for (let i = 0; i < rawLines.length; i++) {
      const raw = rawLines[i]!.replace(/\r$/, '');
      const t = raw.trim();
      if (t === '' || t.startsWith('#')) {
        lines.push({ kind: 'text', raw });
        continue;
      }
      if (/[\0]/.test(t)) throw new DiskError('BADDESCRIPTOR', `NUL byte in descriptor line ${i + 1}`, { path });
      const d = DDB_RE.exec(t);
      if (d) {
        lines.push({ kind: 'ddb', raw, key: d[1]!, value: unquote(d[2]!) });
        continue;
      }
      const e = EXTENT_RE.exec(t);
      if (e) {
        const type = e[3]!.toUpperCase();
        if (!EXTENT_TYPES.includes(type)) {
          throw new DiskError('BADDESCRIPTOR', `unknown extent type ${JSON.stringify(e[3])} on line ${i + 1}`, { path, field: 'extent type', found: e[3] });
        }
        const sectorCount = Number(e[2]);
        const offsetSectors = e[5] === undefined ? 0 : Number(e[5]);
        if (!Number.isSafeInteger(sectorCount) || sectorCount <= 0 || !Number.isSafeInteger(offsetSectors)) {
          throw new DiskError('BADDESCRIPTOR', `bad extent size or offset on line ${i + 1}`, { path, field: 'extent size', found: e[2] });
        }
        if (type !== 'ZERO' && e[4] === undefined) {
          throw new DiskError('BADDESCRIPTOR', `extent on line ${i + 1} has no file name`, { path, field: 'extent file name' });
        }
        if (++extents > MAX_EXTENTS) throw new DiskError('BADDESCRIPTOR', `too many extents (line ${i + 1})`, { path, field: 'extents', expected: `<= ${MAX_EXTENTS}`, found: extents });
        lines.push({
          kind: 'extent',
          raw,
          extent: { access: e[1] as ExtentAccess, sectorCount, type: type as ExtentType, fileName: e[4], offsetSectors },
        });
        continue;
      }
      const h = HEADER_RE.exec(t);
      if (h) {
        lines.push({ kind: 'header', raw, key: h[1]!, value: unquote(h[2]!) });
        continue;
      }
      throw new DiskError('BADDESCRIPTOR', `cannot parse descriptor line ${i + 1}: ${JSON.stringify(t.slice(0, 80))}`, { path, field: `line ${i + 1}` });
    }
    const desc = new Descriptor(lines);
    if (desc.extents().length === 0) throw new DiskError('BADDESCRIPTOR', 'descriptor has no extent lines', { path, field: 'extents' });
    if (desc.get('createType') === undefined) throw new DiskError('BADDESCRIPTOR', 'descriptor has no createType', { path, field: 'createType' });
    const ver = desc.get('version');
    if (ver !== undefined && !['1', '2', '3'].includes(ver)) {
      throw new DiskError('UNSUPPORTEDDISKVERSION', 'unsupported descriptor version', { path, field: 'version', expected: '1, 2 or 3', found: ver });
    }
    return desc;
  }

  /** A fresh descriptor in the order every reader accepts (NOTES.md §2.6). */
  static build(spec: {
    cid: number;
    parentCid?: number;
    createType: string;
    parentFileNameHint?: string;
    extents: ExtentLine[];
    ddb: [string, string][];
  }): Descriptor {
    const text: string[] = ['# Disk DescriptorFile', 'version=1', 'encoding="UTF-8"', `CID=${hex8(spec.cid)}`, `parentCID=${hex8(spec.parentCid ?? 0xffffffff)}`];
    text.push(`createType="${spec.createType}"`);
    if (spec.parentFileNameHint !== undefined) text.push(`parentFileNameHint="${checkValue(spec.parentFileNameHint)}"`);
    text.push('', '# Extent description');
    for (const e of spec.extents) text.push(formatExtent(e));
    text.push('', '# The Disk Data Base', '#DDB', '');
    for (const [k, v] of spec.ddb) text.push(`ddb.${k} = "${checkValue(v)}"`);
    return Descriptor.parse(text.join('\n') + '\n');
  }

  toString(): string {
    return this.lines.map((l) => l.raw).join('\n') + '\n';
  }

  // ---- header keys
  get(key: string): string | undefined {
    const k = key.toLowerCase();
    for (const l of this.lines) if (l.kind === 'header' && l.key.toLowerCase() === k) return l.value;
    return undefined;
  }

  set(key: string, value: string): void {
    checkValue(value);
    const k = key.toLowerCase();
    const raw = UNQUOTED_KEYS.has(k) ? `${key}=${value}` : `${key}="${value}"`;
    const idx = this.lines.findIndex((l) => l.kind === 'header' && l.key.toLowerCase() === k);
    const line: Line = { kind: 'header', raw, key, value };
    if (idx >= 0) {
      this.lines[idx] = { ...line, key: (this.lines[idx] as { key: string }).key };
      return;
    }
    // New header keys go after the last header line above the extents (VirtualBox ordering;
    // ESXi's changeTrackPath sits below the extents and must not pull new keys down with it).
    const firstExtent = this.lines.findIndex((l) => l.kind === 'extent');
    let last = -1;
    this.lines.forEach((l, i) => {
      if (l.kind === 'header' && (firstExtent < 0 || i < firstExtent)) last = i;
    });
    this.lines.splice(last + 1, 0, line);
  }

  /** remove a header key; true if it was there */
  remove(key: string): boolean {
    const k = key.toLowerCase();
    const before = this.lines.length;
    this.lines = this.lines.filter((l) => !(l.kind === 'header' && l.key.toLowerCase() === k));
    return this.lines.length !== before;
  }

  // ---- extents
  extents(): ExtentLine[] {
    return this.lines.flatMap((l) => (l.kind === 'extent' ? [l.extent] : []));
  }

  setExtents(extents: ExtentLine[]): void {
    const first = this.lines.findIndex((l) => l.kind === 'extent');
    this.lines = this.lines.filter((l) => l.kind !== 'extent');
    const at = first >= 0 ? first : this.lines.length;
    this.lines.splice(at, 0, ...extents.map((e) => ({ kind: 'extent' as const, raw: formatExtent(e), extent: e })));
  }

  // ---- disk database
  ddbKeys(): string[] {
    return this.lines.flatMap((l) => (l.kind === 'ddb' ? [l.key] : []));
  }

  ddb(key: string): string | undefined {
    const k = normaliseDdbKey(key).toLowerCase();
    for (const l of this.lines) if (l.kind === 'ddb' && l.key.toLowerCase() === k) return l.value;
    return undefined;
  }

  setDdb(key: string, value: string): void {
    checkValue(value);
    const name = normaliseDdbKey(key);
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new DiskError('INVAL', `invalid metadata key ${JSON.stringify(key)}`);
    const k = name.toLowerCase();
    const idx = this.lines.findIndex((l) => l.kind === 'ddb' && l.key.toLowerCase() === k);
    if (idx >= 0) {
      const old = this.lines[idx] as { key: string };
      this.lines[idx] = { kind: 'ddb', raw: `ddb.${old.key} = "${value}"`, key: old.key, value };
      return;
    }
    let last = -1;
    this.lines.forEach((l, i) => {
      if (l.kind === 'ddb') last = i;
    });
    const line: Line = { kind: 'ddb', raw: `ddb.${name} = "${value}"`, key: name, value };
    if (last >= 0) this.lines.splice(last + 1, 0, line);
    else this.lines.push(line);
  }

  removeDdb(key: string): boolean {
    const k = normaliseDdbKey(key).toLowerCase();
    const before = this.lines.length;
    this.lines = this.lines.filter((l) => !(l.kind === 'ddb' && l.key.toLowerCase() === k));
    return this.lines.length !== before;
  }
}

function normaliseDdbKey(key: string): string {
  return key.replace(/^ddb\./i, '');
}

function checkValue(v: string): string {
  if (/["\r\n\0]/.test(v)) throw new DiskError('INVAL', `descriptor values cannot contain quotes, NUL or line breaks: ${JSON.stringify(v)}`);
  return v;
}

export function formatExtent(e: ExtentLine): string {
  if (e.type === 'ZERO') return `${e.access} ${e.sectorCount} ZERO`;
  const name = `"${checkValue(e.fileName ?? '')}"`;
  // QEMU requires the offset field on FLAT lines and refuses it on VMFS lines.
  if (e.type === 'FLAT') return `${e.access} ${e.sectorCount} FLAT ${name} ${e.offsetSectors}`;
  return `${e.access} ${e.sectorCount} ${e.type} ${name}`;
}

export function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

/** Parse a CID value (1-8 hex digits, either case). */
export function parseCid(v: string | undefined, path?: string, field = 'CID'): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[0-9a-fA-F]{1,8}$/.test(v)) throw new DiskError('BADDESCRIPTOR', `bad ${field}`, { path, field, found: v });
  return parseInt(v, 16) >>> 0;
}

/** Does this buffer look like the start of a text descriptor? (used to probe) */
export function looksLikeDescriptor(head: Buffer): boolean {
  const text = head.subarray(0, Math.min(head.length, 4096)).toString('latin1');
  if (/^\s*#\s*Disk\s*Descriptor\s*File/i.test(text)) return true;
  return /^(\s*#[^\n]*\n|\s*\n)*\s*version\s*=\s*[123]\s*\r?\n/.test(text) && /createType\s*=/.test(text);
}
