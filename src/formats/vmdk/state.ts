/**
 * One open VMDK link (descriptor + extents) as the role files see it: the `this` of the
 * functions in links.ts and maintain.ts. VmdkImage (image.ts) implements it; keeping the type
 * here lets those files work on the image without importing image.ts (no cycle).
 */
import type { Namespace } from '../../storage/namespace.js';
import type { Capabilities } from '../types.js';
import type { Descriptor } from './descriptor.js';
import type { Extent } from './extents.js';
import type { SparseExtent } from './sparse.js';

export interface LinkState {
  readonly path: string;
  readonly readOnly: boolean;
  readonly capacity: number;
  readonly capabilities: Capabilities;
  /** createType */
  readonly type: string;
  /** where the descriptor and extents are named */
  readonly namespace: Namespace;
  /** the current descriptor (replaced by changeDescriptor once the new text is saved) */
  readonly descriptor: Descriptor;
  readonly extents: Extent[];
  /** virtual byte offset where each extent starts */
  readonly starts: number[];
  /** the sparse extent holding an embedded descriptor (monolithic files) */
  readonly embeddedIn: SparseExtent | undefined;
  /** false for a bare extent opened without any descriptor */
  readonly descriptorWritable: boolean;
  /** whether this session has its new CID already (or keeps the old one on purpose) */
  cidRenewed: boolean;
  /** the parent's CID, NO_PARENT for a base */
  readonly parentCid: number;
  readonly sparseExtents: SparseExtent[];
  /** sparse extents this session may write: opened writable and RW in the descriptor */
  readonly writableSparse: SparseExtent[];
  /** index of the extent holding virtual byte `offset` */
  extentIndex(offset: number): number;
  /** apply `change` to a copy of the descriptor, save it, and only then make it current */
  changeDescriptor(change: (d: Descriptor) => void): Promise<void>;
  /** a new content ID on the first change of a session */
  renewCid(): Promise<void>;
  close(): Promise<void>;
}
