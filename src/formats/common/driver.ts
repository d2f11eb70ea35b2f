/**
 * What drivers have in common: the defaults of the Driver members most formats give the same
 * value, and the capabilities of an image that can only be read, which a driver or an adapter
 * (a pipe read as an image) starts from and names only what it adds.
 */
import type { Capabilities, Driver } from '../types.js';

/** an image that can be read and nothing more (a driver spreads it and overrides what it adds) */
export const READ_ONLY_CAPABILITIES: Capabilities = Object.freeze({
  write: 'none',
  blockStatus: 'native',
  zero: 'none',
  metadata: false,
  createTypes: [],
  differencing: false,
  differencingSameSize: false,
  parentLink: 'name',
  identityFollowsContent: false,
  split: false,
  discard: 'none',
  resize: 'none',
  flush: 'concurrent',
  check: 'none',
  compact: 'none',
  defragment: 'none',
});

/**
 * A sparse format of fixed and dynamic images with identity-linked differencing children and
 * every maintenance operation (VDI, VHD, VHDX): each names where it differs.
 */
export const DYNAMIC_FIXED_CAPABILITIES: Capabilities = Object.freeze({
  ...READ_ONLY_CAPABILITIES,
  write: 'native',
  zero: 'emulate',
  metadata: true,
  createTypes: ['dynamic', 'fixed'],
  differencing: true,
  differencingSameSize: true,
  parentLink: 'identity',
  discard: 'native',
  resize: 'grow-shrink',
  check: 'repair',
  compact: 'native',
  defragment: 'native',
});

/** the members a driver may leave out: sector alignment, files named by the caller, no one-pass types */
type Defaulted = 'alignment' | 'selfNaming' | 'sequentialTypes' | 'normaliseType';

export interface DriverSpec extends Omit<Driver, Defaulted>, Partial<Pick<Driver, Defaulted>> {
  /** other spellings of create types, lower case (`normaliseType` lower-cases the rest) */
  readonly typeSpellings?: Readonly<Record<string, string>>;
}

export function defineDriver({ typeSpellings = {}, ...spec }: DriverSpec): Driver {
  return Object.freeze({
    alignment: 512,
    selfNaming: false,
    sequentialTypes: [],
    normaliseType: (type: string) => {
      const t = type.toLowerCase();
      return Object.hasOwn(typeSpellings, t) ? typeSpellings[t]! : t;
    },
    ...spec,
  });
}

/** fixed/dynamic formats (VHD, VHDX): "preallocate" for their fixed type */
export const PREALLOCATE_FIXED = Object.freeze({ name: 'preallocate', description: 'fixed: write the zeros instead of leaving the file sparse' });
/** what qemu-img and Hyper-V also call a dynamic VHD or VHDX */
export const DYNAMIC_SPELLINGS: Readonly<Record<string, string>> = Object.freeze({ sparse: 'dynamic', expandable: 'dynamic' });
