/**
 * Reading an internal snapshot (qemu-img convert -l, QEMU's bdrv_snapshot_load_tmp): the image
 * opened read-only with the snapshot's L1 table in place of the active one. The L2 tables and
 * data clusters it names are shared with the active state (refcounts) and read as they are;
 * the virtual size stays the header's, as QEMU's temporary load leaves it: clusters past what
 * the snapshot's L1 table covers read as unallocated.
 */
import { DiskError } from '../../core/errors.js';
import type { SnapshotRef } from '../types.js';
import type { Qcow2State } from './state.js';
import type { SnapshotInfo } from './snapshots.js';
import { MAX_L1_BYTES } from './structs.js';

/** the snapshot `ref` names, as QEMU finds it: by id and/or name, or a bare word as an id first, then as a name */
export function findSnapshot(list: readonly SnapshotInfo[], ref: SnapshotRef, path: string): SnapshotInfo {
  let found: SnapshotInfo | undefined;
  if (ref.idOrName !== undefined) found = list.find((s) => s.id === ref.idOrName) ?? list.find((s) => s.name === ref.idOrName);
  else if (ref.id !== undefined || ref.name !== undefined) found = list.find((s) => (ref.id === undefined || s.id === ref.id) && (ref.name === undefined || s.name === ref.name));
  if (!found) {
    const wanted = ref.idOrName !== undefined ? JSON.stringify(ref.idOrName) : [ref.id !== undefined ? `id ${JSON.stringify(ref.id)}` : '', ref.name !== undefined ? `name ${JSON.stringify(ref.name)}` : ''].filter(Boolean).join(' and ');
    throw new DiskError('INVAL', `no internal snapshot with ${wanted || 'no id or name'} (${list.length === 0 ? 'the image has none' : `it has: ${list.map((s) => `${s.id} ${s.name}`).join(', ')}`})`, { path, field: 'snapshot', found: wanted });
  }
  return found;
}

/** Switch a just-opened, read-only image to the snapshot `ref` names: its L1 table becomes the one read. */
export async function useSnapshot(s: Qcow2State, ref: SnapshotRef): Promise<void> {
  const path = s.path;
  if (!s.readOnly) throw new DiskError('RDONLY', 'an internal snapshot is opened read-only', { path, field: 'snapshot' });
  const snap = findSnapshot(s.snapshots, ref, path);
  const field = `snapshot[${snap.index}].l1_table_offset`;
  const cs = s.clusterSize;
  if (snap.l1Size > MAX_L1_BYTES / 8) throw new DiskError('CORRUPT', "snapshot L1 table larger than QEMU's 32 MiB cap", { path, struct: 'snapshot table', field: `snapshot[${snap.index}].l1_size`, expected: `<= ${MAX_L1_BYTES / 8}`, found: snap.l1Size });
  if (snap.l1Size > 0 && (snap.l1Offset === 0 || snap.l1Offset % cs !== 0)) throw new DiskError('CORRUPT', 'snapshot L1 table offset is not a cluster boundary', { path, struct: 'snapshot table', field, expected: `a non-zero multiple of ${cs}`, found: snap.l1Offset });
  if (snap.l1Offset + snap.l1Size * 8 > s.file.size) throw new DiskError('CORRUPT', 'snapshot L1 table lies past the end of the file', { path, struct: 'snapshot table', field, expected: `<= ${s.file.size - snap.l1Size * 8}`, found: snap.l1Offset });
  s.l1 = snap.l1Size > 0 ? await s.store.read(snap.l1Offset, snap.l1Size * 8) : Buffer.alloc(0);
  // the in-memory header only: a read-only image never writes it back
  s.h.l1_size = snap.l1Size;
  s.h.l1_table_offset = BigInt(snap.l1Offset);
  s.warnings.push(`reading internal snapshot ${snap.id} (${snap.name})`);
}
