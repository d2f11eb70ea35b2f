/**
 * `ova create`: an OVA written front to back in one pass, every disk converted on the fly to
 * streamOptimized VMDK straight into the archive, with no temporary copy of anything.
 *
 * A tar header holds its member's size, and neither a stream's size nor the descriptor (whose
 * File elements carry ovf:size) is known before the disks are written. The output is a file,
 * so space is reserved and the header written once the size is known:
 *   1. the descriptor's member (first: importers read it before the disks) gets the length of
 *      the descriptor rendered with the widest numbers; the real one is padded with trailing
 *      whitespace (allowed after the root element) to that length and written at the end;
 *   2. each disk's data is streamed right after a placeholder header block, then the header
 *      is written with the size (octal, or GNU base-256 past 8 GiB);
 *   3. the manifest (SHA256 or SHA1 of every member, hashed as it was written) and the two
 *      zero blocks end the archive, padded to a 10 KiB tar record.
 * The archive is built under the hidden partial name and renamed when complete, as convert does.
 */
import { DiskError } from '../../core/errors.js';
import { createHash } from '../../core/platform.js';
import { TAR_BLOCK, encodeTarHeader } from '../../binary/tar.js';
import { Disk } from '../../disk.js';
import { hostFiles } from '../../storage/file.js';
import { tarPadded } from '../../storage/tar.js';
import { StoreSink, type ByteSink } from '../../storage/sink.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import { writeStreamOptimized } from '../../formats/vmdk/stream/writer.js';
import { diskSource } from '../convert-stream.js';
import { targetCapacity } from '../convert.js';
import { partialPath, removeStalePartials } from '../partials.js';
import { MAX_DISKS, ovfDescriptor, type OvfDiskEntry, type OvfVersion, type OvfVmSettings } from './ovf.js';

export type ManifestDigest = 'sha256' | 'sha1';

export interface OvaCreateOptions {
  /** the disks, in order: any image vdkit opens (paths, or names with a scheme) */
  disks: readonly string[];
  /** the VM's name (default: the output's base name); also names the .ovf and .mf members */
  name?: string;
  cpus?: number;
  /** MiB (default 1024) */
  memory?: number;
  /** `N` (CIM OperatingSystem id), `NAME` (VMware guest id, e.g. otherLinux64Guest) or `N:NAME` */
  osType?: string;
  /** logical network the NIC joins (default "VM Network") */
  network?: string;
  firmware?: 'bios' | 'efi';
  /** VMware virtual hardware version (System vmx-NN, default 10) */
  hwVersion?: number;
  ovfVersion?: OvfVersion;
  controller?: 'scsi' | 'ide';
  /** manifest digest (default sha256; sha1 for importers from before OVF 2.0) */
  digest?: ManifestDigest;
  compressionLevel?: number;
  workers?: number;
  overwrite?: boolean;
  namespace?: Namespace;
  signal?: AbortSignal;
  onProgress?: (p: { done: number; total: number; written: number }) => void;
}

export interface OvaMemberWritten {
  name: string;
  size: number;
  digest: string;
}

export interface OvaCreateResult {
  size: number;
  members: OvaMemberWritten[];
  descriptor: string;
}

const DIGEST_LABEL: Record<ManifestDigest, string> = { sha256: 'SHA256', sha1: 'SHA1' };

/** A sink that hashes what passes through it. */
class HashingSink implements ByteSink {
  private readonly hash;
  constructor(
    private readonly inner: ByteSink,
    algorithm: ManifestDigest,
  ) {
    this.hash = createHash(algorithm);
  }
  get name(): string {
    return this.inner.name;
  }
  get position(): number {
    return this.inner.position;
  }
  append(buf: Buffer): Promise<void> {
    this.hash.update(buf);
    return this.inner.append(buf);
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

const wholeIn = (v: number | undefined, dflt: number, min: number, max: number, field: string, path: string): number => {
  const n = v ?? dflt;
  if (!Number.isInteger(n) || n < min || n > max) throw new DiskError('INVAL', `${field} must be a whole number from ${min} to ${max}`, { path, field, found: v });
  return n;
};

/** the VM settings from the options, checked */
export function vmSettings(out: string, opts: OvaCreateOptions): OvfVmSettings {
  const base = out.slice(out.lastIndexOf('/') + 1).replace(/\.ova$/i, '');
  const name = opts.name ?? (base || 'vm');
  if (name.trim() === '' || name.length > 80 || /[\0-\x1f]/.test(name)) throw new DiskError('INVAL', 'the VM name must be 1 to 80 printable characters', { path: out, field: 'name', found: name });
  let os: OvfVmSettings['os'] = { id: 1, vmwType: 'otherGuest64' };
  if (opts.osType !== undefined) {
    const m = /^(?:(\d{1,4}))?(?::?([A-Za-z][\w-]{0,63}))?$/.exec(opts.osType);
    if (!m || (m[1] === undefined && m[2] === undefined)) throw new DiskError('INVAL', 'the OS type is N (CIM id), NAME (VMware guest id) or N:NAME', { path: out, field: 'osType', found: opts.osType });
    os = { id: m[1] === undefined ? 1 : Number(m[1]), vmwType: m[2] };
  }
  const network = opts.network ?? 'VM Network';
  if (network === '' || network.length > 80 || /[\0-\x1f]/.test(network)) throw new DiskError('INVAL', 'the network name must be 1 to 80 printable characters', { path: out, field: 'network', found: network });
  const firmware = opts.firmware ?? 'bios';
  if (firmware !== 'bios' && firmware !== 'efi') throw new DiskError('INVAL', 'firmware is bios or efi', { path: out, field: 'firmware', found: firmware });
  const ovfVersion = opts.ovfVersion ?? '1.0';
  if (ovfVersion !== '1.0' && ovfVersion !== '2.0') throw new DiskError('INVAL', 'the OVF version is 1.0 or 2.0', { path: out, field: 'ovfVersion', found: ovfVersion });
  const controller = opts.controller ?? 'scsi';
  if (controller !== 'scsi' && controller !== 'ide') throw new DiskError('INVAL', 'the disk controller is scsi or ide', { path: out, field: 'controller', found: controller });
  return {
    name,
    cpus: wholeIn(opts.cpus, 1, 1, 768, 'cpus', out),
    memory: wholeIn(opts.memory, 1024, 4, 24 * 1024 * 1024, 'memory', out),
    os,
    network,
    firmware,
    hwVersion: wholeIn(opts.hwVersion, 10, 4, 99, 'hwVersion', out),
    controller,
    ovfVersion,
  };
}

/** a member name made of the VM name: letters, digits, `._-` only */
export const fileStem = (name: string): string => name.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[._]+/, '').slice(0, 64) || 'vm';

async function writeMember(store: ByteStore, at: number, name: string, data: Buffer): Promise<number> {
  await store.write(at, encodeTarHeader({ name, size: data.length, mtime: Date.now() / 1000 }));
  await store.write(at + TAR_BLOCK, Buffer.concat([data, Buffer.alloc(tarPadded(data.length) - data.length)]));
  return at + TAR_BLOCK + tarPadded(data.length);
}

export async function createOva(out: string, opts: OvaCreateOptions): Promise<OvaCreateResult> {
  const vm = vmSettings(out, opts);
  const digest = opts.digest ?? 'sha256';
  if (digest !== 'sha256' && digest !== 'sha1') throw new DiskError('INVAL', 'the manifest digest is sha256 or sha1', { path: out, field: 'digest', found: digest });
  if (opts.disks.length === 0) throw new DiskError('INVAL', 'an OVA needs at least one disk', { path: out, field: 'disks' });
  if (opts.disks.length > MAX_DISKS[vm.controller]) throw new DiskError('INVAL', `one ${vm.controller} controller takes at most ${MAX_DISKS[vm.controller]} disks`, { path: out, field: 'disks', found: opts.disks.length });
  const ns = opts.namespace ?? hostFiles();
  if (!opts.overwrite && (await ns.exists(out))) throw new DiskError('FILEEXISTS', undefined, { path: out });
  const stem = fileStem(vm.name);
  const ovfName = `${stem}.ovf`;
  const mfName = `${stem}.mf`;

  const disks: Disk[] = [];
  let store: ByteStore | undefined;
  const partial = partialPath(out);
  try {
    for (const p of opts.disks) disks.push(await Disk.open(p, { readOnly: true }));
    const entries: OvfDiskEntry[] = disks.map((d, i) => ({ href: `disk${i + 1}.vmdk`, capacity: targetCapacity('vmdk', d.capacity) }));
    // the widest numbers a size can have: the final descriptor is never longer than this
    const widest = ovfDescriptor(vm, entries.map((e) => ({ ...e, fileSize: Number.MAX_SAFE_INTEGER, populatedSize: Number.MAX_SAFE_INTEGER })));
    const reserved = Buffer.byteLength(widest, 'utf8');

    await removeStalePartials(ns, out);
    store = await ns.create(partial, { overwrite: true });
    const members: OvaMemberWritten[] = [];
    const total = entries.reduce((s, e) => s + e.capacity, 0);
    let doneBefore = 0;
    let writtenBefore = 0;
    opts.onProgress?.({ done: 0, total, written: 0 });

    let at = TAR_BLOCK + tarPadded(reserved);
    for (let i = 0; i < disks.length; i++) {
      const e = entries[i]!;
      const headerAt = at;
      const sink = new HashingSink(new StoreSink(store, headerAt + TAR_BLOCK), digest);
      const r = await writeStreamOptimized(diskSource(disks[i]!, e.capacity), sink, {
        fileName: e.href,
        adapterType: vm.controller === 'ide' ? 'ide' : 'lsilogic',
        compressionLevel: opts.compressionLevel,
        workers: opts.workers,
        signal: opts.signal,
        onProgress: (done, written) => opts.onProgress?.({ done: doneBefore + Math.min(done, e.capacity), total, written: writtenBefore + written }),
      });
      await sink.flush();
      e.fileSize = r.size;
      e.populatedSize = r.grains * 65536;
      await store.write(headerAt, encodeTarHeader({ name: e.href, size: r.size, mtime: Date.now() / 1000 }));
      const pad = tarPadded(r.size) - r.size;
      if (pad > 0) await store.write(headerAt + TAR_BLOCK + r.size, Buffer.alloc(pad));
      at = headerAt + TAR_BLOCK + tarPadded(r.size);
      members.push({ name: e.href, size: r.size, digest: sink.digest() });
      doneBefore += e.capacity;
      writtenBefore += r.size;
    }

    const final = ovfDescriptor(vm, entries);
    const descriptor = Buffer.alloc(reserved, 0x20);
    if (descriptor.write(final, 0, 'utf8') !== Buffer.byteLength(final, 'utf8')) throw new DiskError('INTERNAL', 'the OVF descriptor outgrew its reserved space', { path: out });
    // the padding ends with a newline, as text files do
    descriptor[reserved - 1] = 0x0a;
    await writeMember(store, 0, ovfName, descriptor);
    members.unshift({ name: ovfName, size: reserved, digest: createHash(digest).update(descriptor).digest('hex') });

    const manifest = Buffer.from(members.map((m) => `${DIGEST_LABEL[digest]}(${m.name})= ${m.digest}\n`).join(''), 'utf8');
    at = await writeMember(store, at, mfName, manifest);
    members.push({ name: mfName, size: manifest.length, digest: '' });
    // two zero blocks end the archive; tar's 10 KiB records pad it
    const end = Math.ceil((at + 2 * TAR_BLOCK) / 10240) * 10240;
    await store.write(at, Buffer.alloc(end - at));
    await store.flush();
    await store.close();
    store = undefined;
    await ns.rename(partial, out);
    opts.onProgress?.({ done: total, total, written: end });
    return { size: end, members, descriptor: final };
  } catch (err) {
    if (store) {
      await store.close().catch(() => {});
      await ns.remove(partial).catch(() => {});
    }
    throw err;
  } finally {
    for (const d of disks) await d.close().catch(() => {});
  }
}
