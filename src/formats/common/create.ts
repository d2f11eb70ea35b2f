/** What create does the same way in several formats: the new file's lifetime, zero fill, type names. */
import { DiskError } from '../../core/errors.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { CreateOptions } from '../types.js';

/**
 * Create `name` in `ns`, let `write` lay out its structures, flush and close it. If anything
 * fails the half-written file is removed, so a failed create leaves no image that opens.
 */
export async function createFile(ns: Namespace, name: string, opts: { overwrite?: boolean }, write: (store: ByteStore) => Promise<void>): Promise<void> {
  const store = await ns.create(name, { overwrite: !!opts.overwrite });
  try {
    await write(store);
    await store.flush();
  } catch (err) {
    await store.close().catch(() => {});
    await ns.remove(name).catch(() => {});
    throw err;
  }
  await store.close();
}

/**
 * `preallocate` asked of a type that grows as it is written (dynamic, differencing, sparse):
 * refused, since an image made sparse anyway would not be what the caller asked for.
 */
export function refusePreallocate(path: string, format: string, type: string, preallocated: string): never {
  throw new DiskError('INVAL', `preallocate: ${format} ${type} images grow as they are written; only ${preallocated} images are preallocated`, { path, field: 'preallocate', found: type, expected: preallocated });
}

/** Zeros over the bytes [at, at + length), 8 MiB a write (a preallocated fixed image). */
export async function writeZeros(store: ByteStore, at: number, length: number): Promise<void> {
  const chunk = Buffer.alloc(Math.min(length, 8 * 1024 * 1024));
  for (let done = 0; done < length; done += chunk.length) await store.write(at + done, chunk.subarray(0, Math.min(chunk.length, length - done)));
}

export type FixedDynamicType = 'fixed' | 'dynamic' | 'differencing';

/** the type names VHD and VHDX accept (with Hyper-V's and qemu-img's other spellings) */
export const FIXED_DYNAMIC_TYPES: Readonly<Record<string, FixedDynamicType>> = Object.freeze({
  fixed: 'fixed',
  dynamic: 'dynamic',
  differencing: 'differencing',
  diff: 'differencing',
  sparse: 'dynamic',
  expandable: 'dynamic',
});

/**
 * The type of a new VHD or VHDX (`format` names it in errors): dynamic unless asked otherwise,
 * differencing exactly when it has a parent.
 */
export function fixedDynamicType(opts: CreateOptions, path: string, format: string): FixedDynamicType {
  const asked = opts.type === undefined ? undefined : FIXED_DYNAMIC_TYPES[opts.type.toLowerCase()];
  if (opts.type !== undefined && asked === undefined) {
    throw new DiskError('INVAL', `unknown ${format} type ${JSON.stringify(opts.type)}`, { path, field: 'type', expected: 'dynamic, fixed (differencing: give a parent)' });
  }
  const type = asked ?? 'dynamic';
  if (opts.parent) {
    if (type === 'fixed') throw new DiskError('INVAL', `a child ${format} is a differencing image, not a fixed one`, { path, field: 'type', found: opts.type });
    return 'differencing';
  }
  if (type === 'differencing') throw new DiskError('INVAL', `a differencing ${format} needs a parent (create it as a child)`, { path, field: 'type', found: opts.type });
  return type;
}
