/**
 * Defragment in place (NOTES.md "Defragment"): data clusters in guest order, moved by the
 * relayout engine (common/relayout.ts) in crash-safe batches planned by relayout-plan.ts.
 */
import { DiskError } from '../../core/errors.js';
import { defragmentMap } from '../common/relayout.js';
import type { InPlaceOptions, InPlaceResult } from '../types.js';
import { qcow2Relayout } from './map.js';
import type { Qcow2State } from './state.js';

/**
 * Defragment (NOTES.md "Defragment"): the data clusters of the active L1/L2 tables in guest
 * order from the start of the file, skipping every cluster that holds anything else (header,
 * L1, L2 tables, refcount table and blocks, compressed clusters, preallocated zero clusters,
 * leaked clusters): those stay where they are. Per batch of the engine: the targets' refcounts
 * raised, flush; the copies, flush; the L2 entries pointed at them, flush; the old clusters'
 * refcounts lowered, flush. A kill leaves at most leaked clusters. Refcount blocks for every
 * target are made before the first move (`prepare`: a block made mid-way could land on a
 * planned target). Images with internal snapshots are refused (their clusters are shared).
 * The file is cut after the last cluster in use, empty refcount blocks dropped first.
 */
export async function defragment(this: Qcow2State, opts: InPlaceOptions = {}): Promise<InPlaceResult> {
  this.refuseDataFile('defragment');
  await this.prepareWrite();
  if (this.snapshots.length > 0) {
    throw new DiskError('NOTSUPPORTED', `an image with internal snapshots cannot be defragmented (their clusters are shared; ${this.snapshots.length} snapshot(s))`, { path: this.path, struct: 'header', field: 'nb_snapshots', found: this.snapshots.length });
  }
  const fileBytesBefore = await this.store.size();
  const { moved } = await defragmentMap(qcow2Relayout(this, 'defragment'), opts);
  return { fileBytesBefore, fileBytesAfter: await this.store.size(), moved };
}
