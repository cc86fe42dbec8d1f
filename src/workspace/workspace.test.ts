import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, readdirSync, symlinkSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { silentLogger } from '../observability/logger.js';
import { tarOf } from '../testing/oci-images.js';
import { Artifacts } from './artifacts.js';
import { Caches, type CacheScope } from './caches.js';
import { packWorkspace, pathMatcher } from './collect.js';
import { extractInto } from './extract.js';

const LIMITS = { maxBytes: 2 ** 20, maxEntries: 1000, maxPathLength: 4096 };

describe('workspace files: collected and restored without following links', () => {
  let dir: string;
  let n = 0;
  const fresh = async () => {
    const d = path.join(dir, `ws${n++}`);
    await mkdir(d);
    return d;
  };
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bx-ws-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('patterns: a directory takes what is under it, * stays in a name, ** crosses names', () => {
    const m = pathMatcher(['dist/', 'reports/*.xml', '**/*.log']);
    assert.ok(m('dist') && m('dist/a/b.js'));
    assert.ok(m('reports/unit.xml') && !m('reports/sub/unit.xml'));
    assert.ok(m('a/b/c.log') && m('top.log'));
    assert.ok(!m('distx') && !m('src/a.js'));
  });

  test('collection keeps links as links, leaves out what is not a file, and caps the bytes', async () => {
    const ws = await fresh();
    await mkdir(path.join(ws, 'dist/sub'), { recursive: true });
    await writeFile(path.join(ws, 'dist/sub/app.js'), 'app');
    symlinkSync('/etc/passwd', path.join(ws, 'dist/passwd'));
    symlinkSync('/etc', path.join(ws, 'dist/etc'));
    execFileSync('mkfifo', [path.join(ws, 'dist/fifo')]);
    await writeFile(path.join(ws, 'other.txt'), 'not asked for');
    const { stream, done } = packWorkspace(ws, ['dist/'], 1000, 'test');
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    assert.deepEqual(await done, { files: 3, bytes: 3 });
    const listed = execFileSync('tar', ['-tv'], { input: Buffer.concat(chunks), encoding: 'utf8' });
    assert.match(listed, /dist\/passwd -> \/etc\/passwd/);
    assert.match(listed, /dist\/etc -> \/etc/);
    assert.doesNotMatch(listed, /fifo|other\.txt|root:/, 'no fifo, nothing not asked for, nothing of /etc');
    const big = packWorkspace(ws, ['dist/', 'other.txt'], 5, 'test');
    big.stream.resume();
    await assert.rejects(big.done, /the files take more than 5 bytes/);
  });

  test('restoring never writes through a link the workspace holds; an entry replaces a link at its own path', async () => {
    const outside = await fresh();
    const ws = await fresh();
    symlinkSync(outside, path.join(ws, 'vendor'));
    symlinkSync(path.join(outside, 'target'), path.join(ws, 'file'));
    const through = await tarOf([{ name: 'vendor/evil.sh', type: 'file', content: 'pwned' }]);
    await assert.rejects(
      extractInto(ws, Readable.from(through), 'cache k', LIMITS),
      /cache k refused: entry "vendor\/evil.sh" goes through the symlink "vendor"/,
    );
    const over = await tarOf([{ name: 'file', type: 'file', content: 'mine' }]);
    await extractInto(ws, Readable.from(over), 'cache k', LIMITS);
    assert.ok(lstatSync(path.join(ws, 'file')).isFile());
    assert.equal(readFileSync(path.join(ws, 'file'), 'utf8'), 'mine');
    assert.deepEqual(readdirSync(outside), [], 'nothing landed outside the workspace');
    for (const name of ['../up', '/abs']) {
      const bad = await tarOf([{ name, type: 'file', content: 'x' }]);
      await assert.rejects(extractInto(ws, Readable.from(bad), 'cache k', LIMITS), /refused/);
    }
  });

  test('caches: a key from files (a link is not a file), namespaces apart, least recently used evicted', async () => {
    const caches = new Caches(path.join(dir, 'caches'), 250, silentLogger());
    const ws = await fresh();
    await writeFile(path.join(ws, 'lock.json'), '{"a":1}');
    const key = await caches.key(ws, { key: { files: ['lock.json'] }, paths: ['m/'], policy: 'pull-push' });
    assert.match(key, /^[0-9a-f]{20}$/);
    const linked = await fresh();
    symlinkSync(path.join(ws, 'lock.json'), path.join(linked, 'lock.json'));
    assert.equal(
      await caches.key(linked, {
        key: { files: ['lock.json'], prefix: 'npm' },
        paths: ['m/'],
        policy: 'pull-push',
      }),
      'npm-default',
    );
    const trusted: CacheScope = { tenant: 't', repository: 'r', namespace: 'trusted' };
    const untrusted: CacheScope = { ...trusted, namespace: 'untrusted' };
    const save = async (scope: CacheScope, k: string, content: string) => {
      const src = await fresh();
      await mkdir(path.join(src, 'm'));
      await writeFile(path.join(src, 'm/f'), content);
      await caches.save(scope, k, src, ['m/'], 10_000);
    };
    await save(untrusted, 'k', 'from a fork');
    const into = await fresh();
    assert.deepEqual(
      await caches.restore(trusted, 'k', into, LIMITS),
      { hit: false, bytes: 0 },
      'a fork’s cache is not a trusted one',
    );
    await save(trusted, 'k', 'x'.repeat(100));
    await save(trusted, 'k2', 'y'.repeat(100));
    assert.equal((await caches.restore(trusted, 'k', into, LIMITS)).hit, true);
    assert.equal(readFileSync(path.join(into, 'm/f'), 'utf8'), 'x'.repeat(100));
    await save(trusted, 'k3', 'z'.repeat(100)); // past 250 bytes: the least recently used goes
    assert.equal(
      (await caches.restore(untrusted, 'k', await fresh(), LIMITS)).hit,
      false,
      'the oldest, the fork’s, went first',
    );
    assert.equal(
      (await caches.restore(trusted, 'k2', await fresh(), LIMITS)).hit,
      false,
      'then k2, not k (used since)',
    );
    assert.equal((await caches.restore(trusted, 'k', await fresh(), LIMITS)).hit, true);
  });

  test('artifacts expire and are pruned; the same files kept twice are stored once', async () => {
    const artifacts = new Artifacts(path.join(dir, 'artifacts'), 10_000);
    const ws = await fresh();
    await writeFile(path.join(ws, 'out.txt'), 'built');
    const a = await artifacts.collect(
      ws,
      { paths: ['out.txt'], expireInMs: 60_000, when: 'on_success' },
      'build',
    );
    const b = await artifacts.collect(ws, { paths: ['out.txt'], expireInMs: 1, when: 'on_success' }, 'build');
    assert.equal(a.digest, b.digest);
    assert.equal(await artifacts.prune(Date.now() + 1000), 0, 'kept until the later expiry');
    const into = await fresh();
    await artifacts.restore(into, a, 'build', LIMITS);
    assert.equal(readFileSync(path.join(into, 'out.txt'), 'utf8'), 'built');
    assert.equal(await artifacts.prune(Date.now() + 120_000), 1);
    assert.ok(!existsSync(artifacts.blobs.path(a.digest)));
    await assert.rejects(artifacts.restore(await fresh(), a, 'build', LIMITS), /expired/);
  });
});
