/**
 * The uniform disk properties for callers of ops: the tables live with each driver
 * (formats/<fmt>/properties.ts), the generic get/set in the block layer.
 */
export { getProperties, setProperties, settableProperties } from '../block/properties.js';
export { PROPERTY_NAMES, normalizeUuid, parseGeometry, type DiskProperties, type PropertyName } from '../formats/common/properties.js';
export { VMDK_ADAPTERS } from '../formats/vmdk/properties.js';
