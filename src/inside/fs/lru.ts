/**
 * A Map used as an LRU with a budget in caller-chosen units: `get` refreshes, `set` evicts the
 * oldest while over budget. The readers' block and inode caches (ext, FAT) bound their memory
 * with it: sizes come from untrusted metadata, so every cache has a budget, not a count.
 */
export class Lru<K, V> {
  private readonly map = new Map<K, { value: V; cost: number }>();
  private used = 0;
  constructor(private readonly budget: number) {}
  get(key: K): V | undefined {
    const hit = this.map.get(key);
    if (!hit) return undefined;
    this.map.delete(key);
    this.map.set(key, hit);
    return hit.value;
  }
  set(key: K, value: V, cost = 1): void {
    const old = this.map.get(key);
    if (old) {
      this.used -= old.cost;
      this.map.delete(key);
    }
    if (cost > this.budget) return;
    this.map.set(key, { value, cost });
    this.used += cost;
    for (const [k, v] of this.map) {
      if (this.used <= this.budget) break;
      this.map.delete(k);
      this.used -= v.cost;
    }
  }
}
