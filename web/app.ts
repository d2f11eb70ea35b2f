/**
 * The page: takes the picked or dropped files, hands them to the worker (web/worker.ts) and
 * shows what comes back. It never reads the files itself and makes no request but for its own
 * static files (the Content-Security-Policy in index.html says so too). Text from the files
 * (names, messages) goes in with textContent only.
 */
import type { CheckResult, ChecksumResult, Command, FromWorker, InfoResult, MapResult, Result, ToWorker } from './protocol.js';

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
const send = (m: ToWorker): void => worker.postMessage(m);

type Child = Node | string | null | undefined | false;
function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

const UNITS = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
/** "64.0 MiB" */
function size(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) [v, u] = [v / 1024, u + 1];
  return u === 0 ? `${n} bytes` : `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v)} ${UNITS[u]}`;
}
/** "64.0 MiB (67,108,864 bytes)": the facts of the info view, exact */
const exact = (n: number): string => (n < 1024 ? size(n) : `${size(n)} (${n.toLocaleString('en')} bytes)`);
const shortName = (p: string): string => p.replace(/^\//, '');

// --- requests to the worker -------------------------------------------------------------------

let nextId = 1;
const pending = new Map<number, { resolve(r: unknown): void; reject(e: Error): void; onProgress?: (done: number, total: number) => void }>();
let onFiles: ((m: Extract<FromWorker, { type: 'files' }>) => void) | undefined;

worker.onmessage = (ev: MessageEvent<FromWorker>) => {
  const m = ev.data;
  if (m.type === 'files') return onFiles?.(m);
  const p = pending.get(m.id);
  if (!p) return;
  if (m.type === 'progress') return p.onProgress?.(m.done, m.total);
  pending.delete(m.id);
  if (m.type === 'result') p.resolve(m.result);
  else p.reject(Object.assign(new Error(m.message), { code: m.code }));
};

function request<C extends Command>(command: C, top: string, onProgress?: (done: number, total: number) => void): { id: number; done: Promise<Result[C]> } {
  const id = nextId++;
  const done = new Promise<Result[C]>((resolve, reject) => pending.set(id, { resolve: resolve as (r: unknown) => void, reject, onProgress }));
  send({ type: 'run', id, command, top });
  return { id, done };
}

// --- views ------------------------------------------------------------------------------------

function showError(view: HTMLElement, err: Error & { code?: string }): void {
  view.replaceChildren(el('p', { class: 'bad' }, `Could not read the disk: ${err.message}`, err.code ? ` (${err.code})` : ''));
  view.dataset.state = 'error';
}

/** a property value in words: geometry as C/H/S, other objects as JSON */
function propertyText(v: unknown): string {
  if (v && typeof v === 'object' && 'cylinders' in v && 'heads' in v && 'sectors' in v) {
    const g = v as { cylinders: number; heads: number; sectors: number };
    return `${g.cylinders}/${g.heads}/${g.sectors}`;
  }
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/** "parentUuid" -> "parent uuid", "pchs" -> "PCHS" */
function propertyLabel(k: string): string {
  return /^[lp]chs$/.test(k) ? `${k.toUpperCase()} (C/H/S)` : k.replace(/([a-z])([A-Z])/g, '$1 $2').toLowerCase();
}

function renderInfo(view: HTMLElement, i: InfoResult): void {
  const facts = el('dl', { class: 'facts', id: 'info-facts' });
  const row = (list: HTMLElement, k: string, v: string, id: string) => list.append(el('dt', {}, k), el('dd', { id }, v));
  row(facts, 'Format', i.format, 'info-format');
  row(facts, 'Type', i.type, 'info-type');
  row(facts, 'Virtual size', exact(i.capacity), 'info-size');
  row(facts, 'Allocated', `${exact(i.allocatedBytes)}${i.chain.length > 1 ? ', the links together' : ''}`, 'info-allocated');
  row(facts, 'Size of the files', exact(i.fileSize), 'info-files-size');
  if (i.clusterSize) row(facts, 'Cluster / grain / block', size(i.clusterSize), 'info-cluster');
  if (i.geometry) row(facts, 'Geometry (C/H/S)', `${i.geometry.cylinders}/${i.geometry.heads}/${i.geometry.sectors}`, 'info-geometry');
  // the uniform properties (uuids, geometry, adapter, comment) a step further down: facts first
  const props = el('dl', { class: 'facts', id: 'info-properties' });
  for (const [k, v] of Object.entries(i.properties)) if (v !== null && v !== undefined && v !== '') row(props, propertyLabel(k), propertyText(v), `info-prop-${k}`);
  const chain = el('ol', { class: 'chain', id: 'info-chain' });
  i.chain.forEach((l, depth) => {
    const files = l.files.length > 1 ? el('div', { class: 'muted' }, `files: ${l.files.map(shortName).join(', ')}`) : null;
    chain.append(
      el('li', { 'data-path': l.path, 'data-format': l.format, 'data-type': l.type }, el('strong', {}, shortName(l.path)), ' ', el('span', { class: 'tag' }, `${l.format} ${l.type}`), el('div', { class: 'muted' }, `${depth === 0 ? 'top' : `parent ${depth}`}, ${size(l.allocatedBytes)} allocated in ${size(l.fileSize)} of files`), files),
    );
  });
  view.replaceChildren(
    el('div', { class: 'columns' },
      el('div', {}, el('h3', {}, shortName(i.path)), facts, props.childElementCount > 0 ? el('details', {}, el('summary', {}, 'Metadata'), props) : null),
      el('div', {}, el('h3', {}, i.chain.length > 1 ? `Chain: ${i.chain.length} links, top first` : 'Chain: one image, no parent'), chain),
    ),
  );
  view.dataset.state = 'done';
}

function renderCheck(view: HTMLElement, c: CheckResult): void {
  const healthy = c.corruptions === 0 && c.leaks === 0;
  view.replaceChildren(
    el('p', { id: 'check-summary', class: healthy ? 'ok' : 'bad' }, c.summary),
    ...(c.lines.length > 0 ? [el('ul', { id: 'check-findings' }, ...c.lines.map((l) => el('li', {}, l)))] : []),
    el('p', {}, `Checked the headers, tables and what they point at in ${c.checked.map(shortName).join(', ')}${c.checked.length > 1 ? ' (every link of the chain)' : ''}.`),
  );
  view.dataset.state = 'done';
}

const COLOURS = ['var(--data0)', 'var(--data1)', 'var(--data2)', 'var(--data3)'];
const SVG = 'http://www.w3.org/2000/svg';
/** The virtual disk as one bar, 1000 units wide: data coloured by the link it is in, zeros grey, unallocated left empty. */
function renderMap(view: HTMLElement, m: MapResult): void {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'map');
  svg.setAttribute('viewBox', '0 0 1000 10');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  const dataBytes = m.ranges.filter((r) => r.state === 'data').reduce((n, r) => n + r.length, 0);
  svg.setAttribute('aria-label', `Allocation map: ${size(dataBytes)} of ${size(m.capacity)} hold data`);
  for (const r of m.ranges) {
    if (r.state === 'unallocated' || m.capacity === 0) continue;
    const rect = document.createElementNS(SVG, 'rect');
    const x = (r.start / m.capacity) * 1000;
    // a run too short to see still gets a sliver
    rect.setAttribute('x', String(x));
    rect.setAttribute('width', String(Math.max((r.length / m.capacity) * 1000, 0.6)));
    rect.setAttribute('y', '0');
    rect.setAttribute('height', '10');
    rect.setAttribute('fill', r.state === 'zero' ? 'var(--zero)' : COLOURS[Math.min(r.depth, COLOURS.length - 1)]!);
    const title = document.createElementNS(SVG, 'title');
    title.textContent = `${r.state}${r.state === 'data' && m.links > 1 ? ` in link ${r.depth}` : ''}: ${r.start}..${r.start + r.length}`;
    rect.append(title);
    svg.append(rect);
  }
  const legend = el('ul', { class: 'legend' });
  // classes, not style attributes: the page's Content-Security-Policy allows no inline styles
  const swatch = (kind: string, text: string) => legend.append(el('li', {}, el('span', { class: `swatch swatch-${kind}` }), text));
  for (let d = 0; d < Math.min(m.links, COLOURS.length); d++) swatch(`data${d}`, m.links === 1 ? 'data' : d === 0 ? 'data in the top image' : `data in parent ${d}`);
  swatch('zero', 'reads as zeros (recorded)');
  swatch('unalloc', 'unallocated (reads as zeros)');
  const table = el('table', { id: 'map-table' }, el('thead', {}, el('tr', {}, el('th', {}, 'start'), el('th', {}, 'length'), el('th', {}, 'state'), el('th', {}, 'link'))));
  const body = el('tbody');
  const shown = m.ranges.slice(0, 200);
  for (const r of shown) body.append(el('tr', {}, el('td', {}, String(r.start)), el('td', {}, String(r.length)), el('td', {}, r.state), el('td', {}, String(r.depth))));
  table.append(body);
  view.replaceChildren(
    el('p', {}, `${size(dataBytes)} of ${size(m.capacity)} hold data, in ${m.ranges.filter((r) => r.state === 'data').length} runs.`),
    svg,
    el('div', { class: 'axis', 'aria-hidden': 'true' }, el('span', {}, '0'), el('span', {}, size(m.capacity))),
    legend,
    el('details', {}, el('summary', {}, m.ranges.length > shown.length ? `The first ${shown.length} of ${m.ranges.length} runs` : `All ${m.ranges.length} runs`), table),
  );
  // the runs as data, for scripts and tests that read the map (one JSON attribute, no second request)
  view.dataset.map = JSON.stringify(m);
  view.dataset.state = 'done';
}

// --- running the views ------------------------------------------------------------------------

let currentTop: string | undefined;
let checksumRun: number | undefined;

async function show<C extends 'info' | 'check' | 'map'>(command: C, render: (view: HTMLElement, r: Result[C]) => void): Promise<void> {
  const view = $(`view-${command}`);
  const top = currentTop!;
  view.dataset.state = 'running';
  view.replaceChildren(el('p', {}, 'Reading…'));
  try {
    const r = await request(command, top).done;
    if (top === currentTop) render(view, r);
  } catch (err) {
    if (top === currentTop) showError(view, err as Error);
  }
}

function resetChecksum(): void {
  $<HTMLProgressElement>('checksum-progress').value = 0;
  $('checksum-status').textContent = '';
  $('checksum-value').textContent = '';
  $('view-checksum').dataset.state = 'idle';
}

async function runChecksum(): Promise<void> {
  const view = $('view-checksum');
  const [start, cancel, progress, status, value] = [$<HTMLButtonElement>('checksum-start'), $<HTMLButtonElement>('checksum-cancel'), $<HTMLProgressElement>('checksum-progress'), $('checksum-status'), $('checksum-value')];
  resetChecksum();
  view.dataset.state = 'running';
  start.disabled = true;
  cancel.disabled = false;
  const t0 = performance.now();
  const { id, done } = request('checksum', currentTop!, (d, total) => {
    progress.value = total > 0 ? d / total : 0;
    const s = (performance.now() - t0) / 1000;
    status.textContent = `${Math.floor(progress.value * 100)} %${s > 1 ? `, ${size(Math.round(d / s))}/s` : ''}`;
  });
  checksumRun = id;
  try {
    const r: ChecksumResult = await done;
    value.textContent = r.digest;
    progress.value = 1;
    status.textContent = 'done';
    view.dataset.state = 'done';
  } catch (err) {
    const e = err as Error & { code?: string };
    status.textContent = e.code === 'CANCELLED' ? 'cancelled' : `failed: ${e.message}`;
    view.dataset.state = e.code === 'CANCELLED' ? 'cancelled' : 'error';
  } finally {
    checksumRun = undefined;
    start.disabled = false;
    cancel.disabled = true;
  }
}

function inspect(top: string): void {
  currentTop = top;
  $('results').hidden = false;
  resetChecksum();
  void show('info', renderInfo);
  void show('check', renderCheck);
  void show('map', renderMap);
}

function pick(files: File[]): void {
  if (files.length === 0) return;
  $('error').textContent = '';
  // a new pick starts the views over (a script or test waits for them to be done again)
  for (const v of ['info', 'check', 'map']) $(`view-${v}`).dataset.state = 'idle';
  $('picked').textContent = `Reading ${files.length} file${files.length > 1 ? 's' : ''}…`;
  onFiles = (m) => {
    onFiles = undefined;
    $('picked').textContent = `Picked: ${m.names.map(shortName).join(', ')}`;
    if (m.error || m.tops.length === 0) {
      $('error').textContent = m.error ?? 'None of the picked files is a disk image vdkit can open.';
      $('results').hidden = true;
      return;
    }
    const select = $<HTMLSelectElement>('top');
    select.replaceChildren(...m.tops.map((t) => el('option', { value: t }, shortName(t))));
    $('top-choice').hidden = m.tops.length < 2;
    inspect(m.tops[0]!);
  };
  // a picked folder's files keep their path inside it, so descriptors and parent hints resolve
  send({ type: 'files', files: files.map((file) => ({ name: file.webkitRelativePath || file.name, file })) });
}

// --- wiring -----------------------------------------------------------------------------------

const input = $<HTMLInputElement>('files');
input.addEventListener('change', () => pick([...(input.files ?? [])]));
$<HTMLSelectElement>('top').addEventListener('change', (e) => inspect((e.target as HTMLSelectElement).value));
const drop = $('pick');
drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  pick([...(e.dataTransfer?.files ?? [])]);
});
$('checksum-start').addEventListener('click', () => void runChecksum());
$('checksum-cancel').addEventListener('click', () => {
  if (checksumRun !== undefined) send({ type: 'cancel', id: checksumRun });
});

// tabs: click or arrow keys (the WAI-ARIA tabs pattern), Home/End to the first/last
const tabs = [...document.querySelectorAll<HTMLButtonElement>('[role=tab]')];
function select(tab: HTMLButtonElement, focus: boolean): void {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute('aria-controls')!).hidden = !on;
  }
  if (focus) tab.focus();
}
tabs.forEach((t, i) => {
  t.addEventListener('click', () => select(t, false));
  t.addEventListener('keydown', (e) => {
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1 + tabs.length, Home: 0, End: tabs.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    select(tabs[to % tabs.length]!, true);
  });
});
