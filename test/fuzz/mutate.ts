/**
 * Structure-aware mutations. A case is a seed plus a list of concrete byte edits, each one a
 * plain JSON record (so a case can be replayed, shrunk and kept): header fields and table
 * entries set to boundary values, bit flips, byte runs, truncation and extension, table entry
 * swaps and duplicates, table copies over other structures, VMDK descriptor edits, and the
 * checksum fix-ups that carry a mutation past the first validation.
 */
import { Rng } from '../helpers/prng.js';
import { applyFixup, type Field, type FileLayout, type Fixup, type Region } from './layout.js';

export type Mutation =
  | { op: 'set'; file: string; at: number; hex: string; why: string }
  | { op: 'size'; file: string; size: number; why: string }
  | { op: 'copy'; file: string; from: number; to: number; length: number; why: string }
  /** write descriptor text at `at`, zero-filling to `room` bytes (room 0: the text is the whole file) */
  | { op: 'text'; file: string; at: number; room: number; text: string; why: string }
  | { op: 'fixup'; file: string; kind: Fixup; why: string };

export { Rng };

/** the case seed of case `i` of a run */
export function caseSeed(runSeed: number, i: number): number {
  let h = (runSeed ^ 0x9e3779b9) >>> 0;
  h = Math.imul(h ^ (i + 0x85ebca6b), 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return Math.imul(h, 0x27d4eb2d) >>> 0;
}

export interface SeedFiles {
  files: { name: string; layout: FileLayout; data: Buffer }[];
  main: string;
}

function boundary(rng: Rng, width: number, orig: bigint, fileSize: number): bigint {
  const bits = BigInt(width * 8);
  const max = (1n << bits) - 1n;
  const k = BigInt(rng.int(0, width * 8 - 1));
  const fs = BigInt(fileSize);
  const choices = [
    0n, 1n, max, max - 1n, (1n << k) - 1n, 1n << k, (1n << k) + 1n,
    fs, fs - 1n, fs + 1n, fs / 512n, fs / 512n - 1n, fs / 512n + 1n,
    orig + 1n, orig - 1n, orig * 2n, orig >> 1n, orig ^ (1n << k), 0x7fffffffn, 0x80000000n,
  ];
  return ((rng.pick(choices) % (max + 1n)) + (max + 1n)) % (max + 1n);
}

function readInt(b: Buffer, at: number, width: number, le: boolean): bigint {
  if (at + width > b.length) return 0n;
  let v = 0n;
  for (let i = 0; i < width; i++) v = (v << 8n) | BigInt(b[le ? at + width - 1 - i : at + i]!);
  return v;
}

function intHex(v: bigint, width: number, le: boolean): string {
  const out = Buffer.alloc(width);
  for (let i = 0; i < width; i++) out[le ? i : width - 1 - i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out.toString('hex');
}

function fieldMutation(rng: Rng, file: string, b: Buffer, f: Field): Mutation {
  const v = boundary(rng, f.width, readInt(b, f.at, f.width, f.le), b.length);
  return { op: 'set', file, at: f.at, hex: intHex(v, f.width, f.le), why: `${f.name} = ${v}` };
}

function entryMutation(rng: Rng, file: string, b: Buffer, r: Region): Mutation {
  const { size, le } = r.entry!;
  const n = Math.floor(r.length / size);
  // entries that hold something are the interesting ones; pick them more often
  let i = rng.int(0, n - 1);
  for (let tries = 0; tries < 8 && readInt(b, r.at + i * size, size, le) === 0n; tries++) i = rng.int(0, n - 1);
  const at = r.at + i * size;
  const j = rng.int(0, n - 1);
  const other = b.subarray(r.at + j * size, r.at + j * size + size).toString('hex');
  switch (rng.int(0, 3)) {
    case 0:
      return { op: 'set', file, at, hex: other, why: `${r.name}[${i}] = ${r.name}[${j}] (duplicate)` };
    case 1:
      return { op: 'copy', file, from: at, to: r.at + j * size, length: size, why: `${r.name}[${j}] = ${r.name}[${i}] (duplicate)` };
    default: {
      const v = boundary(rng, size, readInt(b, at, size, le), b.length);
      return { op: 'set', file, at, hex: intHex(v, size, le), why: `${r.name}[${i}] = ${v}` };
    }
  }
}

function swapEntries(rng: Rng, file: string, b: Buffer, r: Region): Mutation[] {
  const { size } = r.entry!;
  const n = Math.floor(r.length / size);
  const i = rng.int(0, n - 1);
  const j = rng.int(0, n - 1);
  const a = b.subarray(r.at + i * size, r.at + (i + 1) * size).toString('hex');
  const c = b.subarray(r.at + j * size, r.at + (j + 1) * size).toString('hex');
  return [
    { op: 'set', file, at: r.at + i * size, hex: c, why: `swap ${r.name}[${i}] and [${j}]` },
    { op: 'set', file, at: r.at + j * size, hex: a, why: `swap ${r.name}[${j}] and [${i}]` },
  ];
}

const ODD_PATHS_RO = ['/dev/null', '/nonexistent/x.vmdk', '../../../../etc/hostname', '/etc/hostname', '/proc/self/cmdline'];
const ODD_PATHS = ['', '.', '..', 'x'.repeat(300), 'sub/dir/x.vmdk', 'a b "c".vmdk', 'no-such.vmdk', 'é\u0001.vmdk', 'x:y.vmdk', 'file:a.vmdk', 'json:{}'];
const EXTENT_TYPES = ['SPARSE', 'FLAT', 'ZERO', 'VMFS', 'VMFSSPARSE', 'SESPARSE', 'VMFSRDM', 'VMFSRAW', 'BOGUS'];
const SIZES = ['0', '1', '2', '2047', '4096', '2147483648', '4294967296', '4294967295', '9007199254740991', '9007199254740993', '18446744073709551615', '-1', '1e3', '0x10', '99999999999999999999999'];

function editDescriptor(rng: Rng, text: string, names: string[], rw: boolean): { text: string; why: string[] } {
  const lines = text.split('\n');
  const why: string[] = [];
  const extentIdx = () => lines.map((l, i) => (/^\s*(RW|RDONLY|NOACCESS)\s/.test(l) ? i : -1)).filter((i) => i >= 0);
  const edits = rng.int(1, 3);
  for (let e = 0; e < edits; e++) {
    const ext = extentIdx();
    const k = rng.int(0, 11);
    const li = ext.length ? rng.pick(ext) : -1;
    const parts = li >= 0 ? /^(\s*\S+)\s+(\S+)\s+(\S+)(?:\s+("[^"]*"))?(?:\s+(\S+))?(.*)$/.exec(lines[li]!) : null;
    const line = (p: { access?: string; size?: string; type?: string; name?: string; offset?: string }) =>
      [p.access ?? parts![1], p.size ?? parts![2], p.type ?? parts![3], p.name ?? parts![4], p.offset ?? parts![5]].filter((x) => x !== undefined).join(' ');
    if (k <= 1 && li >= 0) {
      const n = rng.pick([1, 1, 2, 50, 1000, 5000]);
      lines.splice(li + 1, 0, ...Array<string>(n).fill(lines[li]!));
      why.push(`extent line ${li} repeated ${n} more times`);
    } else if (k === 2 && parts) {
      const s = rng.pick(SIZES);
      lines[li] = line({ size: s });
      why.push(`extent size ${s}`);
    } else if (k === 3 && parts) {
      const paths = rw ? [...ODD_PATHS, ...names] : [...ODD_PATHS, ...ODD_PATHS_RO, ...names];
      const p = rng.pick(paths);
      lines[li] = line({ name: JSON.stringify(p) });
      why.push(`extent path ${JSON.stringify(p)}`);
    } else if (k === 4 && parts) {
      const t = rng.pick(EXTENT_TYPES);
      lines[li] = line({ type: t });
      why.push(`extent type ${t}`);
    } else if (k === 5 && parts) {
      const o = rng.pick(SIZES);
      lines[li] = line({ offset: o });
      why.push(`extent offset ${o}`);
    } else if (k === 6 && parts) {
      const a = rng.pick(['RW', 'RDONLY', 'NOACCESS', 'WO']);
      lines[li] = line({ access: a });
      why.push(`extent access ${a}`);
    } else if (k === 7) {
      const hint = rng.pick(rw ? [...names, 'missing.vmdk', ''] : [...names, 'missing.vmdk', '', '/etc/hostname', '../x.vmdk']);
      const cid = rng.pick(['ffffffff', '00000000', 'fffffffe', Math.floor(rng.float() * 2 ** 32).toString(16).padStart(8, '0'), 'zz']);
      const pi = lines.findIndex((l) => /^parentCID\s*=/.test(l));
      if (pi >= 0) lines[pi] = `parentCID=${cid}`;
      else lines.splice(1, 0, `parentCID=${cid}`);
      if (hint || rng.chance(0.5)) lines.splice(2, 0, `parentFileNameHint="${hint}"`);
      why.push(`parentCID=${cid} hint ${JSON.stringify(hint)}`);
    } else if (k === 8) {
      const t = rng.pick(['monolithicSparse', 'twoGbMaxExtentSparse', 'monolithicFlat', 'streamOptimized', 'vmfs', 'vmfsSparse', 'seSparse', 'custom', 'fullDevice', '']);
      const ci = lines.findIndex((l) => /^createType\s*=/.test(l));
      if (ci >= 0) lines[ci] = `createType="${t}"`;
      why.push(`createType ${t}`);
    } else if (k === 9) {
      const i = rng.int(0, lines.length - 1);
      why.push(`line ${i} deleted`);
      lines.splice(i, 1);
    } else if (k === 10) {
      const g = rng.pick(['ddb.geometry.cylinders = "0"', 'ddb.geometry.heads = "4294967296"', 'ddb.geometry.sectors = "-1"', 'version=9', 'version=', 'CID=', 'encoding="EBCDIC"', '=', '"', 'RW', 'RW 1', 'ddb.virtualHWVersion = "99999999999999"']);
      lines.splice(rng.int(0, lines.length), 0, g);
      why.push(`line ${JSON.stringify(g)} inserted`);
    } else if (li >= 0) {
      // the same extent twice, next to each other or apart
      lines.splice(rng.int(0, lines.length), 0, lines[li]!);
      why.push(`extent line ${li} listed twice`);
    }
  }
  return { text: lines.join('\n'), why };
}

/** The mutations of one case (deterministic from `rng` and the seed's pristine bytes). */
export function generate(rng: Rng, seed: SeedFiles, rw: boolean): Mutation[] {
  const out: Mutation[] = [];
  const n = rng.pick([1, 1, 1, 2, 2, 3, 4, 6]);
  const names = seed.files.map((f) => f.name);
  const fixups = new Set<string>();
  for (let m = 0; m < n; m++) {
    // the main file (or the file it names) most of the time
    const f = rng.chance(0.3) ? rng.pick(seed.files) : (seed.files.find((x) => x.name === seed.main && x.layout.regions.some((r) => !r.text)) ?? seed.files.find((x) => x.name !== seed.main && x.layout.regions.length) ?? seed.files.find((x) => x.name === seed.main)!);
    const b = f.data;
    const regions = f.layout.regions;
    const withFields = regions.filter((r) => r.fields?.length);
    const tables = regions.filter((r) => r.entry);
    const text = regions.find((r) => r.text);
    const k = rng.int(0, 99);
    if (text && k < 30) {
      const raw = b.subarray(text.at, text.at + text.length);
      const end = raw.indexOf(0);
      const { text: t, why } = editDescriptor(rng, raw.subarray(0, end < 0 ? raw.length : end).toString('latin1'), names, rw);
      out.push({ op: 'text', file: f.name, at: text.at, room: text.at === 0 && text.length === b.length ? 0 : text.length, text: t, why: why.join('; ') });
    } else if (withFields.length && k < 55) {
      const r = rng.pick(withFields);
      out.push(fieldMutation(rng, f.name, b, rng.pick(r.fields!)));
    } else if (tables.length && k < 75) {
      const r = rng.pick(tables);
      if (rng.chance(0.15)) out.push(...swapEntries(rng, f.name, b, r));
      else out.push(entryMutation(rng, f.name, b, r));
    } else if (tables.length && k < 78) {
      // a whole table copied over another structure
      const r = rng.pick(tables);
      const to = rng.pick(regions);
      out.push({ op: 'copy', file: f.name, from: r.at, to: to.at, length: Math.min(r.length, rng.pick([64, 512, 4096, r.length])), why: `${r.name} copied over ${to.name}` });
    } else if (k < 86 && b.length > 0) {
      const r = regions.length && rng.chance(0.7) ? rng.pick(regions) : { at: 0, length: b.length, name: 'file' };
      const at = r.at + rng.int(0, Math.max(0, Math.min(r.length, b.length - r.at) - 1));
      const byte = b[at] ?? 0;
      const bit = rng.int(0, 7);
      out.push({ op: 'set', file: f.name, at, hex: Buffer.from([byte ^ (1 << bit)]).toString('hex'), why: `bit ${bit} of ${r.name}+${at - r.at} flipped` });
    } else if (k < 93 && b.length > 0) {
      const r = regions.length && rng.chance(0.7) ? rng.pick(regions) : { at: 0, length: b.length, name: 'file' };
      const len = rng.pick([1, 2, 4, 8, 16, 64, 512]);
      const at = r.at + rng.int(0, Math.max(0, Math.min(r.length, b.length - r.at) - 1));
      const fillWith = rng.pick(['00', 'ff', 'random']);
      const hex = fillWith === 'random' ? Buffer.from(Array.from({ length: len }, () => rng.int(0, 255))).toString('hex') : fillWith.repeat(len);
      out.push({ op: 'set', file: f.name, at, hex, why: `${len} bytes of ${fillWith} at ${r.name}+${at - r.at}` });
    } else {
      const edges = [0, 1, 511, 512, b.length - 1, b.length + 1, b.length - 512, b.length + 512, b.length + 1024 * 1024, Math.floor(b.length / 2)];
      for (const r of regions) edges.push(r.at, r.at + 1, r.at + r.length, r.at + r.length - 1);
      const size = Math.max(0, rng.pick(edges));
      out.push({ op: 'size', file: f.name, size, why: size < b.length ? `cut to ${size} bytes` : `extended to ${size} bytes` });
    }
    for (const fx of f.layout.fixups) if (rng.chance(0.85)) fixups.add(`${f.name}\n${fx}`);
  }
  for (const x of fixups) {
    const [file, kind] = x.split('\n') as [string, Fixup];
    out.push({ op: 'fixup', file, kind, why: 'checksums recomputed' });
  }
  return out;
}

/** Apply `muts` to copies of the seed's bytes. */
export function apply(files: ReadonlyMap<string, Buffer>, muts: readonly Mutation[]): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const [k, v] of files) out.set(k, v);
  const own = new Set<string>();
  const get = (f: string) => {
    let b = out.get(f);
    if (!b) b = Buffer.alloc(0);
    if (!own.has(f)) {
      b = Buffer.from(b);
      own.add(f);
      out.set(f, b);
    }
    return b;
  };
  for (const m of muts) {
    let b = get(m.file);
    switch (m.op) {
      case 'set': {
        const d = Buffer.from(m.hex, 'hex');
        if (m.at + d.length > b.length) {
          const g = Buffer.alloc(m.at + d.length);
          b.copy(g);
          b = g;
        }
        d.copy(b, m.at);
        break;
      }
      case 'size': {
        const g = Buffer.alloc(m.size);
        b.copy(g, 0, 0, Math.min(b.length, m.size));
        b = g;
        break;
      }
      case 'copy':
        if (m.from < b.length && m.to < b.length) b.copy(b, m.to, m.from, Math.min(b.length, m.from + m.length, m.from + (b.length - m.to)));
        break;
      case 'text': {
        const t = Buffer.from(m.text, 'latin1');
        if (m.room === 0) b = t;
        else {
          if (m.at + Math.max(t.length, m.room) > b.length) {
            const g = Buffer.alloc(m.at + Math.max(t.length, m.room));
            b.copy(g);
            b = g;
          }
          b.fill(0, m.at, m.at + m.room);
          t.copy(b, m.at);
        }
        break;
      }
      case 'fixup':
        applyFixup(b, m.kind);
        break;
    }
    out.set(m.file, b);
  }
  return out;
}
