/** copy-out's two guards on untrusted names: which directory entries may become host names, which link targets stay inside DEST. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { linkStaysInside, unsafeName } from '../../src/cli/copy-out.js';

test('copy-out: names that cannot become a host path component are refused', () => {
  for (const bad of ['', '.', '..', '../x', 'a/b', '/abs', 'nul\0byte']) assert.ok(unsafeName(bad), JSON.stringify(bad));
  for (const good of ['a', '...', '..a', 'a..', ' ', 'ñandú', '\\', 'x'.repeat(255)]) assert.equal(unsafeName(good), undefined, JSON.stringify(good));
});

test('copy-out: a symlink is kept only when its target stays inside DEST from where it sits', () => {
  // depth: directories between DEST and the link
  assert.equal(linkStaysInside('target.txt', 0), true);
  assert.equal(linkStaysInside('sub/dir/file', 0), true);
  assert.equal(linkStaysInside('./a/./b', 0), true);
  assert.equal(linkStaysInside('../names', 1), true);
  assert.equal(linkStaysInside('../../x', 2), true);
  assert.equal(linkStaysInside('../names', 0), false, 'climbs above DEST');
  assert.equal(linkStaysInside('../../x', 1), false);
  assert.equal(linkStaysInside('/etc', 5), false, 'absolute');
  assert.equal(linkStaysInside('/', 0), false);
  assert.equal(linkStaysInside('', 0), false);
  // a '..' after a normal part could walk back out through a link named by that part
  assert.equal(linkStaysInside('sub/../x', 3), false);
  assert.equal(linkStaysInside('../a/../b', 3), false);
  assert.equal(linkStaysInside('a\0b', 1), false);
});
