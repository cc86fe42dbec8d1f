import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { currentOwner, nodeId, ownedHere, ownerAlive } from './owner.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

test('a node id is made once per state directory; two nodes on one host never judge each other’s jobs', async () => {
  const a = await mkdtemp(path.join(os.tmpdir(), 'bx-node-a-'));
  const b = await mkdtemp(path.join(os.tmpdir(), 'bx-node-b-'));
  dirs.push(a, b);
  assert.match(nodeId(a), /^[0-9a-f-]{36}$/);
  assert.equal(
    readFileSync(path.join(a, 'node-id'), 'utf8').trim(),
    nodeId(a),
    'kept in the state directory',
  );
  assert.notEqual(nodeId(a), nodeId(b), 'same hostname, other node');
  const mine = currentOwner(a);
  assert.equal(ownerAlive(mine, a), true);
  assert.equal(ownerAlive(mine, b), undefined, "another node's owner: only it can say");
  assert.equal(ownerAlive(`${nodeId(a)}:4194300:1`, a), false, 'a dead process of this node');
  assert.ok(ownedHere(mine, a) && !ownedHere(mine, b) && !ownedHere(null, a));
});
