import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CLIENT_SCRIPTS, loadStaticFiles } from './static.js';

const BUDGET = 60 * 1024;

test('the shipped JavaScript is at most 60 KB gzipped, and has no source-map reference', async (t) => {
  const files = await loadStaticFiles();
  let total = 0;
  for (const name of CLIENT_SCRIPTS) {
    const f = files.get(name);
    assert.ok(f, name);
    assert.doesNotMatch(f.body.toString(), /sourceMappingURL/);
    total += f.gzip.length;
  }
  t.diagnostic(`shipped JavaScript: ${total} bytes gzipped (budget ${BUDGET})`);
  assert.ok(total <= BUDGET, `${total} bytes gzipped`);
});
