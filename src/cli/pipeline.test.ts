import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as stringifyYaml } from 'yaml';
import { leftovers, tempState } from '../testing/harness.js';

/**
 * `boxcar pipeline --repo` as a user runs it, on a local repository: every job checks out the
 * commit, a job that `needs` another gets its artifacts, the second run restores the cache,
 * and a fork's run (untrusted, in gVisor: this config does not let untrusted code onto a
 * microVM under TCG) neither reads nor writes the trusted cache.
 */
const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

interface JobJson {
  id: string;
  name: string;
  state: string;
  status: string;
  runtime: string;
  output: string;
  skipped: string | null;
  error: string | null;
  workspace: {
    checkout?: { commit: string; warm: boolean };
    cache?: { hit: boolean; namespace: string; key: string };
    cacheSaved?: { namespace: string };
    artifacts?: { digest: string; files: number };
    artifactsFrom?: string[];
  } | null;
}

describe('boxcar pipeline: checkout, needs, artifacts, caches', () => {
  let state: Awaited<ReturnType<typeof tempState>>;
  let repo: string;
  let head: string;
  /** The job that filled the trusted cache. */
  let filledBy = '';
  const git = (...args: string[]) =>
    execFileSync(
      'git',
      ['-c', 'user.name=t', '-c', 'user.email=t@t', '-c', 'init.defaultBranch=main', ...args],
      {
        cwd: repo,
        encoding: 'utf8',
        env: { PATH: process.env.PATH, GIT_CONFIG_NOSYSTEM: '1', HOME: repo },
      },
    ).trim();
  const pipeline = (...extra: string[]) => {
    const r = spawnSync(
      process.execPath,
      [
        MAIN,
        '--state',
        state.root,
        '--config',
        path.join(state.root, 'config.yaml'),
        'pipeline',
        '--repo',
        repo,
        '--json',
        ...extra,
      ],
      { encoding: 'utf8', timeout: 240_000 },
    );
    assert.ok(r.stdout.trim(), `no JSON (exit ${r.status}): ${r.stderr}`);
    const p = JSON.parse(r.stdout) as { state: string; jobs: JobJson[] };
    return {
      code: r.status,
      stderr: r.stderr,
      p,
      job: (n: string) => p.jobs.find((j) => j.name === n) as JobJson,
    };
  };

  before(async () => {
    state = await tempState();
    await writeFile(path.join(state.root, 'config.yaml'), 'workspaces:\n  artifacts_max: 4Mi\n');
    repo = path.join(state.root, 'repo');
    await mkdir(path.join(repo, 'src'), { recursive: true });
    git('init', '-q');
    await writeFile(path.join(repo, 'src/greet.sh'), 'echo "hello from the checkout"\n');
    await writeFile(path.join(repo, 'package-lock.json'), '{"deps": 1}\n');
    await writeFile(
      path.join(repo, '.boxcar.yml'),
      stringifyYaml({
        name: 'ci',
        stages: ['build', 'test'],
        jobs: [
          {
            name: 'deps',
            stage: 'build',
            cache: { key: { files: ['package-lock.json'] }, paths: ['node_modules/'] },
            command: [
              'if [ -f node_modules/dep.txt ]; then echo "cache: $(cat node_modules/dep.txt)"; else echo "cache: none";',
              'mkdir -p node_modules && echo "installed by job $BOXCAR_JOB_ID" > node_modules/dep.txt; fi',
            ].join(' '),
          },
          {
            name: 'build',
            stage: 'build',
            artifacts: { paths: ['dist/'] },
            command:
              'mkdir -p dist && sh src/greet.sh > dist/out.txt && ln -s /etc dist/etc-link && ln -s ../../../.. dist/up',
          },
          {
            name: 'test',
            stage: 'test',
            needs: ['build'],
            command:
              'cat dist/out.txt && ls -l dist/etc-link | grep -o "/etc$" && test ! -e node_modules && echo "only what it needs"',
          },
          {
            name: 'toobig',
            stage: 'test',
            needs: [],
            artifacts: { paths: ['big'] },
            command: 'head -c 6000000 /dev/zero > big',
          },
          { name: 'after-toobig', stage: 'test', needs: ['toobig'], command: 'echo never' },
        ],
      }),
    );
    git('add', '-A');
    git('commit', '-q', '-m', 'sample');
    head = git('rev-parse', 'HEAD');
  });
  after(async () => {
    const left = await leftovers(state);
    await state.cleanup();
    assert.deepEqual(left, []);
  });

  test('the jobs see the commit; needs passes artifacts (links kept as links); an oversized artifact fails its job', () => {
    const r = pipeline();
    assert.equal(r.p.state, 'failed', r.stderr);
    const test = r.job('test');
    assert.equal(test.state, 'succeeded', test.output + r.stderr);
    assert.match(test.output, /hello from the checkout/);
    assert.match(test.output, /\/etc\n/, 'the symlink came through as a symlink');
    assert.match(test.output, /only what it needs/);
    assert.deepEqual(test.workspace?.artifactsFrom, ['build']);
    assert.equal(r.job('build').workspace?.checkout?.commit, head);
    assert.equal(r.job('build').workspace?.artifacts?.files, 3);
    assert.equal(r.job('deps').workspace?.cache?.hit, false);
    assert.match(r.job('deps').output, /cache: none/);
    filledBy = r.job('deps').id;
    assert.equal(r.job('toobig').state, 'failed');
    assert.match(r.job('toobig').error ?? '', /artifacts: .*more than 4194304 bytes/);
    assert.equal(r.job('after-toobig').status, 'skipped');
    assert.equal(r.job('after-toobig').skipped, 'toobig failed');
    assert.ok(r.job('test').workspace?.checkout?.warm, 'later jobs check out from a warm mirror');
    assert.deepEqual(readdirSync(state.workspaces), [], 'every workspace is gone');
  });

  test('the second run restores the cache; a fork reads and writes only the untrusted one', () => {
    const second = pipeline();
    assert.ok(filledBy, 'the first test filled the cache');
    assert.match(second.job('deps').output, new RegExp(`cache: installed by job ${filledBy}`));
    assert.equal(second.job('deps').workspace?.cache?.hit, true);
    assert.equal(second.job('deps').workspace?.cache?.namespace, 'trusted');

    const fork = pipeline('--source', 'external_pr');
    const deps = fork.job('deps');
    assert.notEqual(deps.runtime, 'runc', 'untrusted code never runs on runc');
    assert.equal(deps.state, 'succeeded', deps.output + fork.stderr);
    assert.match(deps.output, /cache: none/, 'the trusted cache is not restored into a fork’s job');
    assert.equal(deps.workspace?.cacheSaved?.namespace, 'untrusted');

    const third = pipeline();
    assert.match(
      third.job('deps').output,
      new RegExp(`cache: installed by job ${filledBy}`),
      'nothing the fork wrote reached the trusted cache',
    );
    const untrustedIndex = path.join(state.caches, 'untrusted', 'index');
    assert.equal(readdirSync(untrustedIndex).length, 1);
    assert.ok(!existsSync(path.join(state.root, 'etc-link')));
    assert.ok(readFileSync('/etc/hostname', 'utf8').length > 0);
  });
});
