/**
 * Just enough XML for OVF descriptors: a writer that escapes, and a reader that builds an
 * element tree (names with their prefixes as written, attributes, text) from a document of
 * bounded size. No DTDs, no entity definitions (a descriptor needs none; refusing them keeps
 * entity-expansion attacks out), no namespace resolution: OVF writers use the usual prefixes,
 * and the reader matches local names.
 */
import { DiskError } from '../../core/errors.js';

export interface XmlElement {
  /** the name as written, with its prefix ("ovf:Disk") */
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  text: string;
}

export const escapeXml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** the name without its prefix */
export const localName = (name: string): string => name.slice(name.indexOf(':') + 1);

const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

function unescape(s: string, path: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|\w+);/g, (all, e: string) => {
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(Number(e.slice(1)));
    const v = ENTITIES[e];
    if (v === undefined) throw new DiskError('BADDESCRIPTOR', `unknown XML entity ${all}`, { path, field: 'entity', found: all });
    return v;
  });
}

/** Parse `text` into its root element; BADDESCRIPTOR naming the offset on a syntax error. */
export function parseXml(text: string, path: string): XmlElement {
  const bad = (what: string, at: number): never => {
    throw new DiskError('BADDESCRIPTOR', `XML: ${what} at character ${at}`, { path, field: 'xml', offset: at });
  };
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const lt = text.indexOf('<', i);
    const chunk = text.slice(i, lt < 0 ? n : lt);
    if (chunk.trim() !== '') {
      if (stack.length === 0) bad('text outside the root element', i);
      stack[stack.length - 1]!.text += unescape(chunk, path);
    }
    if (lt < 0) break;
    i = lt;
    if (text.startsWith('<?', i)) {
      const e = text.indexOf('?>', i);
      if (e < 0) bad('unterminated processing instruction', i);
      i = e + 2;
    } else if (text.startsWith('<!--', i)) {
      const e = text.indexOf('-->', i);
      if (e < 0) bad('unterminated comment', i);
      i = e + 3;
    } else if (text.startsWith('<![CDATA[', i)) {
      const e = text.indexOf(']]>', i);
      if (e < 0 || stack.length === 0) bad('bad CDATA section', i);
      stack[stack.length - 1]!.text += text.slice(i + 9, e);
      i = e + 3;
    } else if (text.startsWith('<!', i)) {
      bad('DOCTYPE and entity declarations are not accepted', i);
    } else if (text.startsWith('</', i)) {
      const e = text.indexOf('>', i);
      if (e < 0) bad('unterminated end tag', i);
      const name = text.slice(i + 2, e).trim();
      const open = stack.pop();
      if (!open || open.name !== name) bad(`end tag </${name}> does not match <${open?.name ?? ''}>`, i);
      i = e + 1;
    } else {
      const m = /^<([A-Za-z_][\w.:-]*)/.exec(text.slice(i, i + 256));
      if (!m) bad('bad start tag', i);
      const el: XmlElement = { name: m![1]!, attrs: {}, children: [], text: '' };
      i += m![0].length;
      const attr = /\s*([A-Za-z_][\w.:-]*)\s*=\s*("([^"]*)"|'([^']*)')|\s*(\/?>)/y;
      for (;;) {
        attr.lastIndex = i;
        const a = attr.exec(text);
        if (!a) bad(`bad attribute in <${el.name}>`, i);
        i = attr.lastIndex;
        if (a![5]) {
          if (stack.length > 0) stack[stack.length - 1]!.children.push(el);
          else if (root) bad('a second root element', i);
          else root = el;
          if (a![5] === '>') stack.push(el);
          break;
        }
        el.attrs[a![1]!] = unescape(a![3] ?? a![4] ?? '', path);
      }
    }
  }
  if (stack.length > 0) bad(`<${stack[stack.length - 1]!.name}> is not closed`, n);
  if (!root) bad('no root element', 0);
  return root!;
}

/** the children of `el` whose local name is `name` */
export const childrenNamed = (el: XmlElement | undefined, name: string): XmlElement[] => (el ? el.children.filter((c) => localName(c.name) === name) : []);

export const childNamed = (el: XmlElement | undefined, name: string): XmlElement | undefined => childrenNamed(el, name)[0];

/** an attribute by local name ("ovf:href" or "href") */
export function attr(el: XmlElement | undefined, name: string): string | undefined {
  if (!el) return undefined;
  for (const [k, v] of Object.entries(el.attrs)) if (localName(k) === name) return v;
  return undefined;
}

/** every element below `el` (depth first) whose local name is `name` */
export function findAll(el: XmlElement, name: string): XmlElement[] {
  const out: XmlElement[] = [];
  const walk = (e: XmlElement) => {
    for (const c of e.children) {
      if (localName(c.name) === name) out.push(c);
      walk(c);
    }
  };
  walk(el);
  return out;
}
