/**
 * Chain links of a VHD: the parent it names (unique id, timestamp, unicode name, locators),
 * its own identity (the footer's unique id), and the changes rebase, commit and the chain layer
 * make to them (NOTES.md "Parent linkage").
 */
import { basename, dirname, isAbsolute, relative } from '../../core/names.js';
import { DiskError } from '../../core/errors.js';
import { roundUp } from '../../core/ints.js';
import type { BackingChange, BackingLink, LinkRecord } from '../types.js';
import {
  BAT_UNUSED,
  DISK_DIFFERENCING,
  DISK_DYNAMIC,
  FOOTER_SIZE,
  HEADER_SIZE,
  LOCATOR_RESERVE,
  MAX_LOCATOR_BYTES,
  PLATFORM,
  SECTOR,
  decodeUtf16be,
  encodeUtf16be,
  uuidFromIdentity,
  uuidText,
} from './structs.js';
import { decodeLocator, encodeLocators, locatorCapacity, type ParentLinkage, type Region } from './layout.js';
import { cutAfter, type VhdMap } from './map.js';
import { checkWritable, saveFooter, saveHeader, typeOf, type VhdFile } from './state.js';

export function backing(file: VhdFile): BackingLink | undefined {
  if (typeOf(file) !== 'differencing') return undefined;
  const text = (code: number) => file.locators.find((l) => l.code === code && l.text)?.text;
  const rel = text(PLATFORM.W2ru) ?? text(PLATFORM.Wi2r);
  const hint = rel === undefined ? '' : rel.replace(/\\/g, '/').replace(/^(\.\/)+/, '');
  const name = decodeUtf16be(file.header!.parentUnicodeName);
  const hints: string[] = [];
  for (const h of [text(PLATFORM.W2ku), text(PLATFORM.Wi2k), text(PLATFORM.MacX), name]) if (h && h !== hint && !hints.includes(h)) hints.push(h);
  return { hint, hints, format: 'vhd', parentId: uuidText(file.header!.parentUniqueId) };
}

export function identity(file: VhdFile): string {
  return uuidText(file.footer.uniqueId);
}

export async function setIdentity(file: VhdFile, map: VhdMap, id: string): Promise<void> {
  checkWritable(file);
  await map.commitPending();
  await saveFooter(file, { ...file.footer, uniqueId: uuidFromIdentity(id) });
}

/** what a child records about this image besides its unique id: the footer timestamp */
export function linkRecord(file: VhdFile): LinkRecord {
  return { timestamp: file.footer.timestamp };
}

/**
 * Point this differencing image at another parent (rebase, link repair), make a dynamic image
 * a differencing one, or (undefined) make a differencing image a plain dynamic one.
 */
export async function setBacking(file: VhdFile, map: VhdMap, link: BackingChange | undefined): Promise<void> {
  checkWritable(file);
  await map.commitPending();
  if (!file.dyn) throw new DiskError('NOTSUPPORTED', 'a fixed VHD cannot have a parent (only dynamic and differencing ones can)', { path: file.path, field: 'diskType', found: 'fixed' });
  if (!link) {
    if (typeOf(file) !== 'differencing') return;
    // Footers first: once they say "dynamic" the parent fields are ignored. Sectors this image
    // does not hold then read as zeros, so callers first copy in whatever the parent had
    // there (safe rebase, merge): the disk reads the same before and after.
    await saveFooter(file, { ...file.footer, diskType: DISK_DYNAMIC });
    await saveHeader(file, { ...file.header!, parentUniqueId: Buffer.alloc(16), parentTimestamp: 0, parentUnicodeName: Buffer.alloc(512), parentLocators: Buffer.alloc(192) });
    file.locators = [];
    return;
  }
  const parentPath = link.parentName ?? file.namespace.resolve(file.path, link.hint);
  const timestamp = link.parent?.format === 'vhd' ? Number(link.parent.record?.timestamp ?? 0) : 0;
  await writeLinkage(file, parentLinkage(file.namespace.absolute(file.path), parentPath, link.hint, uuidFromIdentity(link.parentId), timestamp));
  // header first: while the footers still say "dynamic" the new parent fields are ignored
  if (typeOf(file) === 'dynamic') await saveFooter(file, { ...file.footer, diskType: DISK_DIFFERENCING });
}

/** Drop every block: all BAT entries unused, the file cut back to its metadata and footer. */
export async function makeEmpty(file: VhdFile, map: VhdMap): Promise<void> {
  checkWritable(file);
  await map.commitPending();
  const d = file.dyn;
  if (!d) throw new DiskError('NOTSUPPORTED', 'a fixed VHD cannot be emptied', { path: file.path, field: 'diskType', found: 'fixed' });
  // 1. the BAT (whole table, in 1 MiB pieces): from here no block is referenced
  const piece = Buffer.alloc(Math.min(d.entries * 4, 1024 * 1024), 0xff);
  for (let at = 0; at < d.entries * 4; at += piece.length) await file.store.write(d.tableOffset + at, piece.subarray(0, Math.min(piece.length, d.entries * 4 - at)));
  d.bat.fill(BAT_UNUSED);
  map.clearCache();
  await file.store.flush();
  // 2. a footer after the metadata, flushed, then the file cut there (the old footer stays the
  //    last sector until the truncate, so the file never ends without one; without the flush a
  //    power cut could keep the truncate and lose the footer: found by the crash explorer's
  //    long run, commit of a VHD child)
  await cutAfter(file, map.metadataEnd(), d);
}

/**
 * Write the parent fields and locators. Locator data goes back into the areas the old
 * locators used when it fits there (header without locators first, then the data, then the
 * full header: a crash leaves the old parent link, minus its locators); else it is appended
 * like a block (footer at the new end first, then the data, then the header).
 */
async function writeLinkage(file: VhdFile, l: ParentLinkage): Promise<void> {
  const d = file.dyn!;
  const free = reusableLocatorAreas(file);
  let placed: { code: number; data: Buffer; offset: number; space: number }[] = [];
  // the same locators in the same places (a commit or a parent's new identity keeps the
  // parent's name): only the header's parent id and time change, in its first sector, one
  // write a power cut cannot tear (the general order below rewrites both header sectors twice)
  if (await sameLocators(file, l)) {
    await saveHeader(file, { ...file.header!, parentUniqueId: l.parentUniqueId, parentTimestamp: l.parentTimestamp, parentUnicodeName: l.parentUnicodeName });
    return;
  }
  for (const x of l.locators) {
    const i = free.findIndex((a) => a.capacity >= x.data.length);
    if (i < 0) break;
    placed.push({ ...x, offset: free[i]!.start, space: free[i]!.capacity });
    free.splice(i, 1);
  }
  if (placed.length === l.locators.length) {
    await saveHeader(file, { ...file.header!, parentLocators: Buffer.alloc(192) });
    for (const p of placed) await file.store.write(p.offset, p.data);
  } else {
    let at = d.nextFree;
    placed = l.locators.map((x) => {
      const p = { ...x, offset: at, space: roundUp(Math.max(x.data.length, LOCATOR_RESERVE), SECTOR) };
      at += p.space;
      return p;
    });
    await file.store.write(at, file.footerBytes);
    for (const p of placed) await file.store.write(p.offset, p.data);
    d.nextFree = at;
    file.fileSize = at + FOOTER_SIZE;
  }
  await saveHeader(file, {
    ...file.header!,
    parentUniqueId: l.parentUniqueId,
    parentTimestamp: l.parentTimestamp,
    parentUnicodeName: l.parentUnicodeName,
    parentLocators: encodeLocators(placed),
  });
  file.locators = placed.map((p) => ({ code: p.code, space: p.space, length: p.data.length, offset: p.offset, text: decodeLocator(p.code, p.data) }));
}

/** Whether the locators `l` names are already in the file: same platform codes, same bytes, same order. */
async function sameLocators(file: VhdFile, l: ParentLinkage): Promise<boolean> {
  const have = file.locators.filter((x) => x.code !== PLATFORM.NONE);
  if (have.length !== l.locators.length) return false;
  for (let i = 0; i < have.length; i++) {
    const [a, b] = [have[i]!, l.locators[i]!];
    if (a.code !== b.code || a.length !== b.data.length || a.offset < SECTOR || a.offset + a.length > file.fileSize) return false;
    if (!(await file.store.read(a.offset, a.length)).equals(b.data)) return false;
  }
  return true;
}

/** Areas of the current locators that hold nothing else (no block, table or header), in bytes. */
function reusableLocatorAreas(file: VhdFile): { start: number; capacity: number }[] {
  const d = file.dyn!;
  const areas = file.locators
    .filter((l) => l.code !== PLATFORM.NONE && l.offset >= SECTOR)
    .map((l) => ({ name: 'locator', start: l.offset, end: l.offset + locatorCapacity(l) }))
    .sort((a, b) => a.start - b.start);
  const used: Region[] = [
    { name: 'footer copy', start: 0, end: SECTOR },
    { name: 'header', start: d.headerOffset, end: d.headerOffset + HEADER_SIZE },
    { name: 'BAT', start: d.tableOffset, end: d.tableOffset + d.entries * 4 },
    { name: 'footer', start: file.fileSize - FOOTER_SIZE, end: Number.MAX_SAFE_INTEGER },
  ];
  const stride = d.bitmapBytes + d.blockSize;
  for (const e of d.bat) if (e !== BAT_UNUSED) used.push({ name: 'block', start: e * SECTOR, end: e * SECTOR + stride });
  const out: { start: number; capacity: number }[] = [];
  for (let i = 0; i < areas.length; i++) {
    const a = { start: areas[i]!.start, end: Math.min(areas[i]!.end, areas[i + 1]?.start ?? Number.MAX_SAFE_INTEGER) };
    if (a.end > a.start && !used.some((u) => u.start < a.end && a.start < u.end)) out.push({ start: a.start, capacity: a.end - a.start });
  }
  return out;
}

/**
 * What a child records about `parentPath` (absolute, in the child's namespace): the parent's
 * unique id, its footer timestamp (as the chain layer read it: VhdImage.linkRecord), its file
 * name (UTF-16BE, as VirtualBox writes it) and two locators in UTF-16LE: W2ku with the absolute
 * path and W2ru with the path relative to the child's folder (".\name", "..\dir\name"), from
 * `hint` when it is relative. `childPath` is the child's absolute name.
 */
export function parentLinkage(childPath: string, parentPath: string, hint: string, parentUniqueId: Buffer, parentTimestamp: number): ParentLinkage {
  const name = encodeUtf16be(basename(parentPath));
  if (name.length > 512) {
    throw new DiskError('NAMETOOLONG', 'the parent file name does not fit the 256 UTF-16 units of the parent unicode name', { path: childPath, struct: 'dynamicHeader', field: 'parentUnicodeName', found: basename(parentPath) });
  }
  const parentUnicodeName = Buffer.alloc(512);
  name.copy(parentUnicodeName);
  const rel = hint !== '' && !isAbsolute(hint) ? hint : relative(dirname(childPath), parentPath);
  const win = rel.replace(/\//g, '\\');
  const w2ru = win.startsWith('..\\') || win === '..' ? win : `.\\${win}`;
  const locators = [
    { code: PLATFORM.W2ku, data: Buffer.from(parentPath, 'utf16le') },
    { code: PLATFORM.W2ru, data: Buffer.from(w2ru, 'utf16le') },
  ];
  for (const l of locators) {
    if (l.data.length > MAX_LOCATOR_BYTES) throw new DiskError('NAMETOOLONG', 'the parent path is too long for a parent locator', { path: childPath, struct: 'dynamicHeader', field: 'parentLocator', found: parentPath });
  }
  return { parentUniqueId, parentTimestamp, parentUnicodeName, locators };
}
