/**
 * The LVM2 metadata text format (what `vgcfgbackup` writes and what a PV's metadata area holds):
 *
 *     vg0 {                       # a section: name { ... }
 *         id = "Xq3...-..."       # key = value; values are "strings", integers, or
 *         status = ["READ", "WRITE"]   # [lists] of strings and integers
 *         physical_volumes { pv0 { ... } }
 *     }
 *
 * `#` starts a comment to the end of the line; strings escape `"` and `\` with a backslash.
 * Untrusted input: the text size, the nesting depth and the number of values are capped, and
 * every error names the line.
 */
import { DiskError } from '../../core/errors.js';

export type LvmValue = string | number | LvmValue[] | LvmSection;
/** a section's keys in text order (a prototype-free record: keys like `__proto__` are plain keys) */
export type LvmSection = { [key: string]: LvmValue };

export const MAX_TEXT = 16 * 1024 * 1024;
export const MAX_DEPTH = 32;
export const MAX_VALUES = 1_000_000;

type Token = { kind: 'word' | 'string' | 'number' | 'punct'; text: string; line: number };

function tokens(text: string): Token[] {
  const out: Token[] = [];
  let line = 1;
  let i = 0;
  const n = text.length;
  const err = (msg: string) => new DiskError('CORRUPT', `${msg} at line ${line}`, { struct: 'LVM metadata', field: 'text', line });
  while (i < n) {
    const c = text[i]!;
    if (c === '\n') {
      line++;
      i++;
    } else if (c === ' ' || c === '\t' || c === '\r' || c === '\0') i++;
    else if (c === '#') {
      while (i < n && text[i] !== '\n') i++;
    } else if ('{}[]=,'.includes(c)) {
      out.push({ kind: 'punct', text: c, line });
      i++;
    } else if (c === '"') {
      let s = '';
      i++;
      for (;;) {
        if (i >= n) throw err('unterminated string');
        const d = text[i]!;
        if (d === '"') break;
        if (d === '\\' && i + 1 < n) {
          s += text[i + 1];
          i += 2;
          continue;
        }
        if (d === '\n') line++;
        s += d;
        i++;
      }
      i++;
      out.push({ kind: 'string', text: s, line });
    } else if (/[-0-9.]/.test(c)) {
      const m = /^-?[0-9]+(\.[0-9]+)?/.exec(text.slice(i, i + 40));
      if (!m) throw err(`bad number`);
      out.push({ kind: 'number', text: m[0], line });
      i += m[0].length;
    } else if (/[A-Za-z_]/.test(c)) {
      const start = i;
      while (i < n && /[A-Za-z0-9_.+-]/.test(text[i]!)) i++;
      out.push({ kind: 'word', text: text.slice(start, i), line });
    } else {
      throw err(`unexpected character ${JSON.stringify(c)}`);
    }
    if (out.length > MAX_VALUES * 4) throw err(`more than ${MAX_VALUES * 4} tokens`);
  }
  return out;
}

/** Parse metadata text into nested sections. */
export function parseLvmText(text: string): LvmSection {
  if (text.length > MAX_TEXT) throw new DiskError('CORRUPT', `metadata text of ${text.length} bytes is more than ${MAX_TEXT}`, { struct: 'LVM metadata', field: 'size' });
  const toks = tokens(text);
  let p = 0;
  let values = 0;
  const err = (msg: string, t?: Token) => new DiskError('CORRUPT', `${msg} at line ${t?.line ?? toks[toks.length - 1]?.line ?? 1}`, { struct: 'LVM metadata', field: 'text', line: t?.line });
  const scalar = (t: Token | undefined): string | number => {
    if (t?.kind === 'string') return t.text;
    if (t?.kind === 'number') return Number(t.text);
    throw err(`expected a string or a number, found ${t ? JSON.stringify(t.text) : 'the end'}`, t);
  };
  const section = (depth: number, closing: boolean): LvmSection => {
    if (depth > MAX_DEPTH) throw err(`sections nested deeper than ${MAX_DEPTH}`, toks[p]);
    const out: LvmSection = Object.create(null) as LvmSection;
    for (;;) {
      const t = toks[p];
      if (!t) {
        if (closing) throw err('a section is not closed');
        return out;
      }
      if (t.kind === 'punct' && t.text === '}') {
        if (!closing) throw err('"}" without a section', t);
        p++;
        return out;
      }
      if (t.kind !== 'word') throw err(`expected a name, found ${JSON.stringify(t.text)}`, t);
      const next = toks[p + 1];
      if (++values > MAX_VALUES) throw err(`more than ${MAX_VALUES} values`, t);
      if (next?.kind === 'punct' && next.text === '{') {
        p += 2;
        out[t.text] = section(depth + 1, true);
      } else if (next?.kind === 'punct' && next.text === '=') {
        p += 2;
        const v = toks[p];
        if (v?.kind === 'punct' && v.text === '[') {
          p++;
          const list: LvmValue[] = [];
          for (;;) {
            const u = toks[p];
            if (u?.kind === 'punct' && u.text === ']') {
              p++;
              break;
            }
            if (u?.kind === 'punct' && u.text === ',') {
              p++;
              continue;
            }
            if (++values > MAX_VALUES) throw err(`more than ${MAX_VALUES} values`, u);
            list.push(scalar(u));
            p++;
          }
          out[t.text] = list;
        } else {
          out[t.text] = scalar(v);
          p++;
        }
      } else {
        throw err(`expected "=" or "{" after ${JSON.stringify(t.text)}`, next ?? t);
      }
    }
  };
  return section(0, false);
}
