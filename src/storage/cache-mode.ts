/**
 * How far `flush` goes, for the whole process (qemu-img's `-t` cache modes, the two that matter
 * for files): 'writeback' (the default) makes flush an fdatasync, so a convert's target is on the
 * disk before it gets its name; 'unsafe' makes flush only hand data to the kernel, as
 * `qemu-img convert` does by default: faster, but a host crash soon after can lose the output.
 * The order of writes inside a file is the same in both modes; only durability differs.
 */
export type CacheMode = 'writeback' | 'unsafe';

let mode: CacheMode = 'writeback';

export function setCacheMode(m: CacheMode): void {
  mode = m;
}

export function cacheMode(): CacheMode {
  return mode;
}
