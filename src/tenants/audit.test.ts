import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { JobSpec } from '../jobs/spec.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { tempState } from '../testing/harness.js';
import { BOXCAR_MAIN } from '../testing/serve-process.js';

/** The audit trail and tenants' secrets, through the `boxcar` command as an operator uses it. */
const boxcar = (root: string, args: string[], input?: string) => {
  const r = spawnSync(process.execPath, [BOXCAR_MAIN, '--state', root, ...args], { encoding: 'utf8', input });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
};

const decision = { trust: 'trusted' as const, runtime: 'runc' as const, fallback: null, reasons: ['test'] };

test('audit verify passes on a store with 1,000 jobs, and names the first changed or missing record', async (t) => {
  const state = await tempState();
  t.after(() => state.cleanup());
  const store = new SqliteStore(state.db);
  const spec = JobSpec.parse({ command: ['true'] });
  for (let i = 0; i < 1000; i++)
    await store.createJob({
      id: `job-${i}`,
      tenant: i % 2 ? 'team-a' : 'team-b',
      spec,
      decision,
      origin: { via: 'api', actor: 'token:tok-test' },
      owner: null,
    });
  await store.requestCancel('job-7', 'token:tok-test');
  await store.close();

  const ok = boxcar(state.root, ['audit', 'verify']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^audit trail intact: 1001 records, head [0-9a-f]{64}\n$/);
  const listed = boxcar(state.root, ['audit', '--tenant', 'team-a', '--json', '--limit', '5000']);
  const records = listed.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { action: string; tenant: string });
  assert.equal(records.filter((r) => r.action === 'job.submitted').length, 500);
  assert.ok(records.every((r) => r.tenant === 'team-a'));

  // Someone with the database file rewrites history: the trail refuses it, so they drop the guard.
  const db = new Database(state.db);
  assert.throws(() => db.exec(`UPDATE audit SET actor = 'someone-else' WHERE seq = 500`), /append-only/);
  db.exec('DROP TRIGGER audit_no_update');
  db.exec(`UPDATE audit SET detail = '{"name":"forged"}' WHERE seq = 500`);
  db.close();
  const changed = boxcar(state.root, ['audit', 'verify']);
  assert.equal(changed.code, 1);
  assert.match(
    changed.stdout,
    /audit trail BROKEN at record 500: its contents do not match its hash \(changed after it was written\) \(499 records before it are intact\)/,
  );
});

test('audit verify names a removed record', async (t) => {
  const state = await tempState();
  t.after(() => state.cleanup());
  const store = new SqliteStore(state.db);
  for (let i = 0; i < 20; i++)
    await store.audit({ tenant: 't', actor: 'operator:root', action: 'x', subject: String(i) });
  await store.close();
  const db = new Database(state.db);
  db.exec('DROP TRIGGER audit_no_delete');
  db.exec('DELETE FROM audit WHERE seq = 10');
  db.close();
  const r = boxcar(state.root, ['audit', 'verify']);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /BROKEN at record 11: record 10 is missing/);
});

test('secrets from the CLI: read from stdin, sealed in the store, listed by name only, audited without their values', async (t) => {
  const state = await tempState();
  t.after(() => state.cleanup());
  const value = 'npm_9c2d41f07a6b5e38';
  const set = boxcar(state.root, ['secret', 'set', '--tenant', 'team-a', 'NPM_TOKEN'], `${value}\n`);
  assert.equal(set.code, 0, set.stderr);
  assert.equal(set.stdout, '', 'the value is never printed');
  assert.equal(
    boxcar(
      state.root,
      ['secret', 'set', '--tenant', 'team-a', '--repo', 'org/app', 'DEPLOY'],
      'deploy-key-0123',
    ).code,
    0,
  );
  const key = `${state.root}/secrets.key`;
  assert.equal(statSync(key).mode & 0o777, 0o600);
  for (const file of [state.db, `${state.db}-wal`])
    if (existsSync(file)) assert.ok(!readFileSync(file).includes(value), `${file} holds no clear value`);

  const ls = boxcar(state.root, ['secret', 'ls', '--tenant', 'team-a', '--json']);
  assert.equal(ls.code, 0, ls.stderr);
  const names = JSON.parse(ls.stdout) as Array<{ name: string; repository: string }>;
  assert.deepEqual(
    names.map((s) => [s.name, s.repository]),
    [
      ['NPM_TOKEN', ''],
      ['DEPLOY', 'org/app'],
    ],
  );
  assert.ok(!ls.stdout.includes(value));
  assert.equal(boxcar(state.root, ['secret', 'ls', '--tenant', 'team-b', '--json']).stdout.trim(), '[]');

  const short = boxcar(state.root, ['secret', 'set', '--tenant', 'team-a', 'PIN'], '1234');
  assert.equal(short.code, 125);
  assert.match(short.stderr, /secret PIN: its value is 4 characters; use at least 8, or it cannot be masked/);

  assert.equal(boxcar(state.root, ['secret', 'rm', '--tenant', 'team-a', 'NPM_TOKEN']).code, 0);
  const again = boxcar(state.root, ['secret', 'rm', '--tenant', 'team-a', 'NPM_TOKEN']);
  assert.equal(again.code, 125);
  assert.match(again.stderr, /no secret NPM_TOKEN for tenant team-a/);
  assert.equal(boxcar(state.root, ['token', 'create', '--operator']).code, 0);

  const audit = boxcar(state.root, ['audit', '--json']);
  assert.ok(!audit.stdout.includes(value));
  const actions = audit.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { action: string; subject: string; actor: string });
  assert.deepEqual(
    actions.map((a) => [a.action, a.subject]),
    [
      ['secret.set', 'NPM_TOKEN'],
      ['secret.set', 'org/app:DEPLOY'],
      ['secret.removed', 'NPM_TOKEN'],
      ['token.created', actions[3]?.subject ?? ''],
    ],
  );
  assert.ok(actions.every((a) => a.actor.startsWith('operator:')));
  assert.equal(boxcar(state.root, ['audit', 'verify']).code, 0);
});
