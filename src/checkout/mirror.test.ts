import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../lib/errors.js';
import { createLogger } from '../observability/logger.js';
import { mountTmpfs, unmount } from '../runtimes/shared/mounts.js';
import { checkProtocol, urlProtocol } from './git.js';
import { Mirrors, relativeUrl } from './mirror.js';

const git = (cwd: string, ...args: string[]) =>
  execFileSync(
    'git',
    ['-c', 'user.name=t', '-c', 'user.email=t@t', '-c', 'init.defaultBranch=main', ...args],
    {
      cwd,
      encoding: 'utf8',
      env: { PATH: process.env.PATH, GIT_CONFIG_NOSYSTEM: '1', HOME: cwd },
    },
  ).trim();

/** A repository with `files` (a value starting with "->" is a symlink) committed; returns the commit. */
async function commit(repo: string, files: Record<string, string>, message = 'c'): Promise<string> {
  for (const [name, content] of Object.entries(files)) {
    const full = path.join(repo, name);
    await mkdir(path.dirname(full), { recursive: true });
    if (content.startsWith('->')) execFileSync('ln', ['-sfn', content.slice(2), full]);
    else await writeFile(full, content);
  }
  git(repo, 'add', '-A');
  git(repo, 'commit', '-q', '--allow-empty', '-m', message);
  return git(repo, 'rev-parse', 'HEAD');
}

describe('repository mirrors and checkouts', () => {
  let dir: string;
  let mirrors: Mirrors;
  let repo: string;
  let n = 0;
  /** A fresh work tree on a tmpfs of `bytes`, as a job's workspace is. */
  const workTrees: string[] = [];
  const workTree = async (bytes = 64 * 2 ** 20) => {
    const wt = path.join(dir, 'ws', String(n++));
    await mountTmpfs(wt, { bytes, mode: 0o755 });
    workTrees.push(wt);
    return wt;
  };
  /** Everything under `dir` but the work trees and mirrors: what a checkout must never touch. */
  const outside = () =>
    readdirSync(dir).filter((e) => !['ws', 'mirrors'].includes(e) && !e.startsWith('repo-'));
  /** A new source repository. */
  const newRepo = async () => {
    const r = path.join(dir, `repo-${n++}`);
    await mkdir(r);
    git(r, 'init', '-q');
    return r;
  };

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bx-git-'));
    repo = await newRepo();
    mirrors = new Mirrors({
      dir: path.join(dir, 'mirrors'),
      protocols: ['file'],
      logger: createLogger('silent'),
    });
  });
  after(async () => {
    for (const wt of workTrees) await unmount(wt);
    await rm(dir, { recursive: true, force: true });
  });

  test('the exact commit lands in the work tree; the next checkout of it is warm, a new commit fetched incrementally', async () => {
    const first = await commit(repo, { 'README.md': 'hello\n', 'src/run.sh': '#!/bin/sh\necho hi\n' });
    execFileSync('chmod', ['+x', path.join(repo, 'src/run.sh')]);
    const second = await commit(repo, { 'src/run.sh': '#!/bin/sh\necho two\n' });
    const wt = await workTree();
    const cold = await mirrors.checkout({ url: repo, commit: first, submodules: false, workTree: wt });
    assert.equal(cold.warm, false);
    assert.equal(readFileSync(path.join(wt, 'README.md'), 'utf8'), 'hello\n');
    assert.equal(
      readFileSync(path.join(wt, 'src/run.sh'), 'utf8'),
      '#!/bin/sh\necho hi\n',
      'the first commit, not the branch head',
    );
    assert.ok(!existsSync(path.join(wt, '.git')), 'no repository metadata in the workspace');
    const mirror = mirrors.mirrorDir(repo);
    assert.equal(git(mirror, 'rev-parse', '--verify', '-q', `refs/boxcar/${first}`), first);
    const warm = await mirrors.checkout({
      url: repo,
      commit: first,
      submodules: false,
      workTree: await workTree(),
    });
    assert.equal(warm.warm, true, 'a commit the mirror has is not fetched again');
    const next = await mirrors.checkout({
      url: repo,
      commit: second,
      submodules: false,
      workTree: await workTree(),
    });
    assert.equal(next.warm, false);
    assert.equal(
      readFileSync(path.join(workTrees.at(-1) as string, 'src/run.sh'), 'utf8'),
      '#!/bin/sh\necho two\n',
    );
    assert.equal(
      readdirSync(path.join(dir, 'mirrors')).filter((e) => e.endsWith('.git')).length,
      1,
      'one mirror per repository',
    );
  });

  test('a hostile repository: symlinks to host paths stay links, its filters, hooks and fsmonitor never run', async () => {
    const marker = path.join(dir, 'pwned');
    const repo = await newRepo();
    const sha = await commit(repo, {
      '.gitattributes': '* filter=pwn\n',
      'etc-link': '->/etc',
      'passwd-link': '->/etc/passwd',
      up: '->../../../..',
      'data.txt': 'plain\n',
    });
    // What the repository's own config and hooks would run, were they ever read: they are not
    // (a repository's config never travels with a fetch, and the node's git reads no other).
    git(repo, 'config', 'filter.pwn.smudge', `touch ${marker}`);
    git(repo, 'config', 'filter.pwn.required', 'true');
    git(repo, 'config', 'core.fsmonitor', `touch ${marker}`);
    await writeFile(path.join(repo, '.git/hooks/post-checkout'), `#!/bin/sh\ntouch ${marker}\n`, {
      mode: 0o755,
    });
    const wt = await workTree();
    await mirrors.checkout({ url: repo, commit: sha, submodules: false, workTree: wt });
    assert.equal(readlinkSync(path.join(wt, 'etc-link')), '/etc');
    assert.ok(lstatSync(path.join(wt, 'passwd-link')).isSymbolicLink());
    assert.equal(readlinkSync(path.join(wt, 'up')), '../../../..');
    assert.equal(readFileSync(path.join(wt, 'data.txt'), 'utf8'), 'plain\n', 'no filter changed the file');
    assert.ok(!existsSync(marker), 'no filter, hook or fsmonitor of the repository ran');
    assert.deepEqual(outside(), [], 'nothing was written outside the work tree');
  });

  test('a tree that names an entry twice (a path-confusion attack) is refused when fetched', async () => {
    const blob = execFileSync('git', ['hash-object', '-w', '--stdin'], { cwd: repo, input: 'x' })
      .toString()
      .trim();
    const tree = execFileSync('git', ['mktree'], {
      cwd: repo,
      input: `100644 blob ${blob}\tsame\n100644 blob ${blob}\tsame\n`,
    })
      .toString()
      .trim();
    const sha = git(repo, 'commit-tree', tree, '-m', 'dup');
    await assert.rejects(
      mirrors.checkout({ url: repo, commit: sha, submodules: false, workTree: await workTree() }),
      (err: Error) => err instanceof UserError && /cannot fetch/.test(err.message),
    );
  });

  test('a file past the workspace size fails the checkout, and nothing lands outside the workspace', async () => {
    const sha = await commit(repo, { 'huge.bin': 'x'.repeat(3 * 2 ** 20) });
    const wt = await workTree(2 ** 20);
    await assert.rejects(
      mirrors.checkout({ url: repo, commit: sha, submodules: false, workTree: wt }),
      (err: Error) => err instanceof UserError && /unable to write file huge.bin/.test(err.message),
    );
    assert.deepEqual(outside(), []);
  });

  test('submodules only when asked, from a relative URL through the same allowlist', async () => {
    const sub = await newRepo();
    await commit(sub, { 'lib.txt': 'from the submodule\n' });
    git(
      repo,
      '-c',
      'protocol.file.allow=always',
      'submodule',
      'add',
      '-q',
      `../${path.basename(sub)}`,
      'vendor/sub',
    );
    const sha = await commit(repo, {}, 'with a submodule');
    const plain = await workTree();
    await mirrors.checkout({ url: repo, commit: sha, submodules: false, workTree: plain });
    assert.deepEqual(readdirSync(path.join(plain, 'vendor/sub')), [], 'not checked out unless asked');
    const withSubs = await workTree();
    const r = await mirrors.checkout({ url: repo, commit: sha, submodules: true, workTree: withSubs });
    assert.equal(r.submodules, 1);
    assert.equal(readFileSync(path.join(withSubs, 'vendor/sub/lib.txt'), 'utf8'), 'from the submodule\n');
  });

  test('transports: only the allowed ones, and never a remote helper or an option', () => {
    assert.equal(urlProtocol('https://github.com/o/r.git'), 'https');
    assert.equal(urlProtocol('git@github.com:o/r.git'), 'ssh');
    assert.equal(urlProtocol('ssh://git@host/o/r'), 'ssh');
    assert.equal(urlProtocol('/srv/repo'), 'file');
    assert.equal(urlProtocol('file:///srv/repo'), 'file');
    assert.throws(() => urlProtocol('ext::sh -c touch% /tmp/pwned'), /remote helper/);
    assert.throws(() => urlProtocol('--upload-pack=touch /tmp/x'), /starts with "-"/);
    assert.throws(() => urlProtocol('fd::3'), /remote helper/);
    assert.throws(() => checkProtocol('/srv/repo', ['https', 'ssh']), /workspaces.checkout_protocols/);
    assert.throws(() => checkProtocol('http://h/r', ['https', 'ssh']), /uses http/);
    assert.equal(relativeUrl('https://h/org/app.git', '../lib.git'), 'https://h/org/lib.git');
    assert.equal(relativeUrl('git@h:org/app.git', '../lib.git'), 'git@h:org/lib.git');
  });
});
