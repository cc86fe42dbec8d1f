import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { GroupCommit } from './group-commit.js';

let dir: string;
let db: Database.Database;
/** Another connection to the same file: sees only what has committed. */
let other: Database.Database;
const insert = (v: string) => () => db.prepare('INSERT INTO t (v) VALUES (?)').run(v).changes;
const seen = () =>
  (other.prepare('SELECT v FROM t ORDER BY rowid').all() as Array<{ v: string }>).map((r) => r.v);

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'bx-group-commit-'));
  db = new Database(path.join(dir, 'db'));
  db.pragma('journal_mode = WAL');
  db.exec('CREATE TABLE t (v TEXT NOT NULL)');
  other = new Database(path.join(dir, 'db'));
});
after(async () => {
  other.close();
  db.close();
  await rm(dir, { recursive: true, force: true });
});

test('writes of one turn commit together, in call order, and resolve only once committed', async () => {
  db.exec('DELETE FROM t');
  const g = new GroupCommit(db);
  let seenDuring: string[] | undefined;
  const writes = [
    g.run(insert('a')),
    g.run(() => {
      seenDuring = seen(); // a is written but, in the same transaction, not committed yet
      return insert('b')();
    }),
    g.run(insert('c')),
  ];
  assert.deepEqual(seen(), [], 'nothing is written before the turn ends');
  const resolvedSeeing = await writes[0]?.then(() => seen());
  assert.deepEqual(await Promise.all(writes), [1, 1, 1]);
  assert.deepEqual(seenDuring, [], 'one transaction for the three');
  assert.deepEqual(resolvedSeeing, ['a', 'b', 'c'], 'resolved once all had committed');
  assert.deepEqual(seen(), ['a', 'b', 'c']);
});

test('a write that throws is undone and rejected alone; the others commit', async () => {
  db.exec('DELETE FROM t');
  const g = new GroupCommit(db);
  const ok1 = g.run(insert('a'));
  const bad = g.run(() => {
    insert('half')();
    throw new Error('refused');
  });
  const ok2 = g.run(insert('b'));
  await assert.rejects(bad, /refused/);
  await Promise.all([ok1, ok2]);
  assert.deepEqual(seen(), ['a', 'b']);
});

test('a commit that cannot happen rejects every write of the batch and writes nothing', async () => {
  db.exec('DELETE FROM t');
  db.pragma('busy_timeout = 0');
  const g = new GroupCommit(db);
  other.exec('BEGIN IMMEDIATE'); // another writer holds the database
  try {
    const writes = [g.run(insert('a')), g.run(insert('b'))];
    for (const w of writes) await assert.rejects(w, /database is locked/);
  } finally {
    other.exec('ROLLBACK');
  }
  assert.deepEqual(seen(), []);
});

test('flush commits what is pending at once (a store closing)', async () => {
  db.exec('DELETE FROM t');
  const g = new GroupCommit(db);
  const w = g.run(insert('a'));
  g.flush();
  assert.deepEqual(seen(), ['a']);
  assert.equal(await w, 1);
});
