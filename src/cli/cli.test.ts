import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { leftovers, tempState } from '../testing/harness.js';
import { freePort } from '../testing/ports.js';

/** The `boxcar` command as a user runs it: a real process, real exit codes, real containers. */
const require = createRequire(import.meta.url);
const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));
const REPO = path.resolve(path.dirname(MAIN), '../../..');

describe('boxcar CLI', () => {
  let state: Awaited<ReturnType<typeof tempState>>;
  const boxcar = (
    args: string[],
    opts: { uid?: number; input?: string; env?: Record<string, string> } = {},
  ) => {
    const r = spawnSync(process.execPath, [MAIN, '--state', state.root, ...args], {
      encoding: 'utf8',
      timeout: 60_000,
      uid: opts.uid,
      cwd: REPO,
      input: opts.input,
      env: { ...process.env, ...opts.env },
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  before(async () => {
    state = await tempState();
  });
  after(async () => {
    const left = await leftovers(state);
    await state.cleanup();
    assert.deepEqual(left, []);
  });

  test('run --json prints exactly one result object and exits with the job’s code', () => {
    const r = boxcar(['run', '--runtime', 'runc', '--json', '--', 'sh', '-c', 'echo hi; exit 3']);
    assert.equal(r.code, 3, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 1, 'stdout holds only the JSON object');
    const result = JSON.parse(lines[0] as string) as Record<string, unknown>;
    for (const key of [
      'id',
      'runtime',
      'decision',
      'exitCode',
      'oomKilled',
      'timedOut',
      'startupMs',
      'durationMs',
      'peakMemoryBytes',
      'costDollars',
      'output',
    ]) {
      assert.ok(key in result, `missing ${key}`);
    }
    assert.equal(result.exitCode, 3);
    assert.equal(result.output, 'hi\n');
    assert.equal(result.runtime, 'runc');
    assert.deepEqual(Object.keys(result.decision as object).sort(), [
      'fallback',
      'reasons',
      'runtime',
      'trust',
    ]);
  });

  test('without --json, output streams to the terminal', () => {
    const r = boxcar(['run', '--', 'sh', '-c', 'echo to-out; echo to-err >&2']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, 'to-out\n');
    assert.match(r.stderr, /to-err/);
  });

  test('a job file runs, and jobs lists it', async () => {
    const file = path.join(state.root, 'job.yaml');
    await writeFile(file, 'name: from-file\ncommand: echo from a file\nresources:\n  memory: 64Mi\n');
    const r = boxcar(['run', '-f', file, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { output: string }).output, 'from a file\n');
    const list = boxcar(['jobs', '--json']);
    const jobs = JSON.parse(list.stdout) as Array<{
      name: string;
      state: string;
      runtime: string;
      exitCode: number;
    }>;
    assert.ok(jobs.some((j) => j.name === 'from-file' && j.state === 'succeeded' && j.exitCode === 0));
    assert.match(boxcar(['jobs']).stdout, /from-file\s+succeeded\s+runc/);
  });

  test('bad input ends with one clear line naming the field and the fix, never a stack trace', async () => {
    const bad = path.join(state.root, 'bad.yaml');
    await writeFile(bad, 'command: make\nresources:\n  memory: lots\n');
    const cases: Array<[string[], RegExp]> = [
      [['run', '--runtime', 'kubevirt', '--', 'true'], /--runtime.*kubevirt.*(runc|choices)/s],
      [['run', '--memory', 'lots', '--', 'true'], /--memory: "lots" is not a size; use .*256Mi/],
      [['run', '--timeout', 'soon', '--', 'true'], /--timeout: "soon" is not a duration/],
      [['run'], /missing command: give it after --/],
      [['run', '-f', '/nonexistent/job.yaml'], /cannot read \/nonexistent\/job\.yaml \(ENOENT\)/],
      [['run', '-f', bad], /bad\.yaml:3: resources\.memory: "lots" is not a size/],
    ];
    for (const [args, expected] of cases) {
      const r = boxcar(args);
      assert.equal(r.code, 125, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, expected);
      assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
    }
    const notRoot = boxcar(['run', '--', 'true'], { uid: 65534 });
    assert.equal(notRoot.code, 125);
    assert.match(notRoot.stderr, /^boxcar: boxcar run needs root/);
    assert.equal(notRoot.stderr.trim().split('\n').length, 1);
  });

  test('Ctrl-C cancels the job, cleans up and exits 130', async () => {
    const child = spawn(
      process.execPath,
      [MAIN, '--state', state.root, 'run', '--', 'sh', '-c', 'echo ready; sleep 60'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    await waitForLine(child.stdout, 'ready');
    child.kill('SIGINT');
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    assert.equal(code, 130);
    assert.deepEqual(await leftovers(state), []);
    const jobs = JSON.parse(boxcar(['jobs', '--json', '--limit', '1']).stdout) as Array<{ state: string }>;
    assert.equal(jobs[0]?.state, 'cancelled');
  });

  test('after kill -9 of boxcar, the job keeps its real exit status (recovered from its monitor)', async () => {
    const child = spawn(
      process.execPath,
      [MAIN, '--state', state.root, 'run', '--', 'sh', '-c', 'echo ready; sleep 1; exit 4'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    await waitForLine(child.stdout, 'ready');
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    await new Promise((r) => setTimeout(r, 1500)); // the job finishes on its own, under conmon
    const jobs = JSON.parse(boxcar(['jobs', '--json', '--limit', '1']).stdout) as Array<{
      state: string;
      exitCode: number;
      error: string | null;
    }>;
    assert.equal(jobs[0]?.state, 'failed', JSON.stringify(jobs[0]));
    assert.equal(jobs[0]?.exitCode, 4);
    assert.deepEqual(await leftovers(state), []);
  });

  test('the sample repository’s pipeline passes with its deliberate failures allowed', async () => {
    // Its `debian` and `lint-wasm` jobs need the registry `make run` starts (a debootstrapped
    // image, a published module); pulls from a real registry are tested in
    // images/registry.test.ts, so the copy run here leaves them out.
    const repo = path.join(state.root, 'sample-repo');
    cpSync(path.join(REPO, 'examples/sample-repo'), repo, { recursive: true });
    const sample = parseYaml(await readFile(path.join(repo, '.boxcar.yml'), 'utf8')) as {
      jobs: Array<{ name: string; needs?: string[] }>;
    };
    const dropped = ['debian', 'lint-wasm'];
    assert.ok(dropped.every((d) => sample.jobs.some((j) => j.name === d)));
    const jobs = sample.jobs
      .filter((j) => !dropped.includes(j.name))
      .map((j) => (j.needs ? { ...j, needs: j.needs.filter((n) => !dropped.includes(n)) } : j));
    await writeFile(path.join(repo, '.boxcar.yml'), stringifyYaml({ ...sample, jobs }));
    const git = (...args: string[]) =>
      spawnSync('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@t', ...args]);
    git('init', '-q');
    git('add', '-A');
    git('commit', '-q', '-m', 'sample');
    const r = boxcar(['pipeline', '--repo', repo, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const p = JSON.parse(r.stdout) as {
      passed: boolean;
      jobs: Array<{ name: string; state: string; output: string }>;
    };
    assert.equal(p.passed, true);
    const states = Object.fromEntries(p.jobs.map((j) => [j.name, j.state]));
    assert.deepEqual(states, {
      deps: 'succeeded',
      lint: 'succeeded',
      build: 'succeeded',
      'unit-tests': 'succeeded',
      'integration-flaky': 'failed',
      'memory-hog': 'oom',
      'hangs-forever': 'timeout',
      package: 'succeeded',
      'report-failure': 'skipped',
    });
    assert.match(p.jobs.find((j) => j.name === 'unit-tests')?.output ?? '', /ok 4 - "already-a-slug"/);
  });

  test('a pipeline whose image cannot be pulled fails before any job runs, naming the job and the registry', async () => {
    const port = await freePort(); // free: nothing answers there
    const file = path.join(state.root, 'unreachable.yaml');
    await writeFile(
      file,
      stringifyYaml({
        name: 'unreachable',
        jobs: [
          { name: 'first', command: 'echo ran' },
          { name: 'needs-image', image: `127.0.0.1:${port}/debian:bookworm`, command: 'true' },
        ],
      }),
    );
    const before = JSON.parse(boxcar(['jobs', '--json']).stdout) as unknown[];
    const r = boxcar(['pipeline', file]);
    assert.equal(r.code, 125);
    assert.equal(
      r.stderr.trim(),
      `boxcar: job needs-image: image 127.0.0.1:${port}/debian:bookworm: cannot reach registry 127.0.0.1:${port} (ECONNREFUSED); check that it is up at that address`,
    );
    assert.equal((JSON.parse(boxcar(['jobs', '--json']).stdout) as unknown[]).length, before.length);
  });

  test('registry login stores a tenant’s credentials sealed, ls shows the registry only, logout forgets them', () => {
    const login = boxcar(['registry', 'login', 'ghcr.io', '--tenant', 'acme', '--username', 'bot'], {
      input: 'ghp_secret-token-value\n',
    });
    assert.equal(login.code, 0, login.stderr);
    const listed = boxcar(['registry', 'ls', '--tenant', 'acme', '--json']);
    assert.deepEqual(
      (JSON.parse(listed.stdout) as Array<{ registry: string }>).map((l) => l.registry),
      ['ghcr.io'],
    );
    assert.doesNotMatch(listed.stdout + boxcar(['secret', 'ls', '--tenant', 'acme']).stdout, /ghp_secret/);
    assert.doesNotMatch(boxcar(['audit']).stdout, /ghp_secret/);
    const bad = boxcar(['registry', 'login', 'not a host', '--tenant', 'acme', '--username', 'bot'], {
      input: 'x',
    });
    assert.equal(bad.code, 125);
    assert.match(bad.stderr, /^boxcar: registry not a host: give its host\[:port\]/);
    assert.equal(boxcar(['registry', 'logout', 'ghcr.io', '--tenant', 'acme']).code, 0);
    assert.deepEqual(JSON.parse(boxcar(['registry', 'ls', '--tenant', 'acme', '--json']).stdout), []);
  });

  test('policy explain: the real pull_request example is trusted, its fork by a first-time contributor is not', async () => {
    const examples = require('@octokit/webhooks-examples/api.github.com/index.json') as Array<{
      name: string;
      examples: Array<Record<string, unknown>>;
    }>;
    const opened = examples
      .find((e) => e.name === 'pull_request')
      ?.examples.find((e) => e.action === 'opened') as {
      pull_request: { author_association: string; head: { repo: { full_name: string } } };
    };
    const same = path.join(state.root, 'pr.json');
    const fork = path.join(state.root, 'pr-fork.json');
    await writeFile(same, JSON.stringify(opened));
    const forked = structuredClone(opened);
    forked.pull_request.head.repo.full_name = 'stranger/Hello-World';
    forked.pull_request.author_association = 'FIRST_TIME_CONTRIBUTOR';
    await writeFile(fork, JSON.stringify(forked));
    const explainWith = (env: Record<string, string>, ...args: string[]) => {
      const r = boxcar(['policy', 'explain', '--json', ...args], { env });
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout) as {
        trust: string;
        runtime: string;
        fallback: string | null;
        reasons: string[];
      };
    };
    const explainAs = (...args: string[]) => explainWith({}, ...args);
    // The webhook's tenant (github by default) is not listed: its ceiling keeps even a member's
    // pull request untrusted, and says so.
    const unlisted = explainAs('--github-event', 'pull_request', '--payload', same);
    assert.equal(unlisted.trust, 'untrusted');
    assert.match(
      unlisted.reasons.join('\n'),
      /lowered by the tenant's ceiling: tenant github is not listed under tenants in the config/,
    );
    const config = path.join(state.root, 'tenants.yaml');
    const tenants = 'tenants:\n  github: { trust: trusted }\n  partners: { trust: untrusted }\n';
    await writeFile(config, `${tenants}microvm:\n  allow_tcg_for_untrusted: true\n`);
    const explain = (...args: string[]) => explainAs('--config', config, ...args);
    const a = explain('--github-event', 'pull_request', '--payload', same);
    assert.deepEqual([a.trust, a.runtime, a.fallback], ['trusted', 'runc', null]);
    const asPartners = explain(
      '--tenant',
      'partners',
      '--source',
      'internal_repo',
      '--user-group',
      'internal_team',
    );
    assert.equal(asPartners.trust, 'untrusted');
    assert.match(asPartners.reasons.join('\n'), /tenant partners is untrusted \(tenants\.partners\.trust\)/);
    const b = explain('--github-event', 'pull_request', '--payload', fork);
    assert.deepEqual([b.trust, b.runtime, b.fallback], ['untrusted', 'firecracker', 'gvisor']);
    assert.ok(b.reasons.some((r) => r.includes('FIRST_TIME_CONTRIBUTOR')));
    for (const health of ['firecracker.failure_rate=0.02', 'firecracker.available=0.4']) {
      const c = explain('--github-event', 'pull_request', '--payload', fork, '--health', health);
      assert.equal(c.runtime, 'gvisor', health);
      assert.match(c.reasons.at(-1) ?? '', /falling back to gvisor/);
    }
    // Judged locally: this node runs microVMs (QEMU, KVM or TCG, here opted in), so untrusted code stays on firecracker.
    const local = explain('--github-event', 'pull_request', '--payload', fork, '--local');
    assert.deepEqual([local.runtime, local.fallback], ['firecracker', 'gvisor']);
    // On TCG without the opt-in, the microVM is no boundary: untrusted code goes to gvisor, and the reasons say why.
    const strict = path.join(state.root, 'strict.yaml');
    await writeFile(strict, tenants);
    const forkOn = (accel: string, cfg: string) =>
      explainWith(
        { BOXCAR_VM_ACCEL: accel },
        '--config',
        cfg,
        '--github-event',
        'pull_request',
        '--payload',
        fork,
      );
    const tcg = forkOn('tcg', strict);
    assert.deepEqual([tcg.runtime, tcg.fallback], ['gvisor', null]);
    assert.match(
      tcg.reasons.at(-1) ?? '',
      /firecracker is no boundary for untrusted code on this node: QEMU runs guests with TCG/,
    );
    const optIn = forkOn('tcg', config);
    assert.equal(optIn.runtime, 'firecracker');
    assert.ok(optIn.reasons.some((r) => r.includes('microvm.allow_tcg_for_untrusted is set')));
    const kvm = forkOn('kvm', strict);
    assert.deepEqual([kvm.runtime, kvm.fallback], ['firecracker', 'gvisor']);
  });

  test('a policy naming runtime firecrackr is refused, naming it; untrusted code may not ask for runc', async () => {
    const bad = path.join(state.root, 'bad-policy.yaml');
    await writeFile(
      bad,
      (await readFile(path.join(REPO, 'policies/default.yaml'), 'utf8')).replace(
        'runtime: firecracker',
        'runtime: firecrackr',
      ),
    );
    const r = boxcar(['--policy', bad, 'policy', 'explain', '--source', 'external_pr']);
    assert.equal(r.code, 125);
    assert.match(
      r.stderr,
      /bad-policy\.yaml:\d+: routing_policy\.untrusted_code\.runtime: "firecrackr" is not valid/,
    );
    const runc = boxcar(['run', '--source', 'external_pr', '--runtime', 'runc', '--', 'true']);
    assert.equal(runc.code, 125);
    assert.match(runc.stderr, /untrusted .* may not run on runc/);
  });

  test('doctor reports runc usable and the other runtimes with a reason', () => {
    const r = boxcar(['doctor', '--json']);
    assert.equal(r.code, 0);
    const fps = JSON.parse(r.stdout) as Array<{ runtime: string; usable: boolean; reason: string }>;
    assert.equal(fps.find((f) => f.runtime === 'runc')?.usable, true);
    for (const f of fps) assert.ok(f.reason.length > 0);
  });

  test('cost --scenario seed prints the seed’s four rows and its ROI; measured runs probe jobs on this node', () => {
    const seed = boxcar(['cost', '--scenario', 'seed']);
    assert.equal(seed.code, 0, seed.stderr);
    for (const row of [
      /all runc\s+\$5,000\.00\s+\$3,000\.00\s+\$8,000\.00/,
      /all gVisor\s+\$15,000\.00\s+\$3,000\.00\s+\$18,000\.00\s+\+125\.00%/,
      /mixed \(untrusted on gVisor\)\s+\$8,000\.00\s+\$3,000\.00\s+\$11,000\.00\s+\+37\.50%/,
      /Firecracker for untrusted\s+\$4,100\.00\s+\$3,000\.00\s+\$7,100\.00\s+-11\.25%/,
      /saves \$46,800\.00 a year, pays back in 1\.07 years, 3-year ROI 180\.8%/,
    ])
      assert.match(seed.stdout, row);
    const bad = boxcar(['cost', '--scenario', 'guess']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--scenario.*guess.*(seed|measured)/);
    const measured = boxcar(['cost', '--scenario', 'measured', '--json']);
    assert.equal(measured.code, 0, measured.stderr);
    const [s, m] = JSON.parse(measured.stdout) as Array<{
      scenario: string;
      inputs: { jobMiB: Record<string, number> };
      measured?: Record<string, { mib: number; how: string }>;
      rows: Array<{ total: number }>;
    }>;
    assert.equal(s?.scenario, 'seed');
    assert.equal(m?.scenario, 'measured on this node');
    const runc = m?.measured?.runc;
    assert.ok(runc && runc.how.startsWith('measured') && runc.mib > 0 && runc.mib < 64, JSON.stringify(runc));
    assert.equal(m?.rows.length, 4);
    assert.ok(Number.isInteger(m?.rows[0]?.total), 'amounts are integer micro-dollars');
    // The probe jobs are jobs like any other: priced, by runtime; a microVM's own memory on its own line.
    const byRuntime = boxcar(['cost', '--by', 'runtime', '--since', '1h', '--json']);
    assert.equal(byRuntime.code, 0, byRuntime.stderr);
    const report = JSON.parse(byRuntime.stdout) as {
      lines: Array<{ key: string; jobs: number; overhead: number; total: number }>;
      idleCapacity: { capacity: number; allocated: number; idle: number };
    };
    const lines = report.lines;
    // The operator's whole report: this node's idle capacity beside what its jobs were allocated.
    assert.ok(report.idleCapacity.capacity > 0 && report.idleCapacity.allocated > 0, byRuntime.stdout);
    assert.ok(
      Math.abs(report.idleCapacity.idle - (report.idleCapacity.capacity - report.idleCapacity.allocated)) <=
        1,
    );
    for (const r of ['runc', 'gvisor', 'firecracker'])
      assert.ok((lines.find((l) => l.key === r)?.jobs ?? 0) >= 3, `${r}: ${byRuntime.stdout}`);
    assert.ok((lines.find((l) => l.key === 'firecracker')?.overhead ?? 0) > 0, 'the VMM is priced');
    const csv = boxcar(['cost', '--by', 'trust', '--csv']);
    assert.match(csv.stdout, /^trust,jobs,memory,cpu,overhead,total,isolationPremium\n/);
    assert.match(
      boxcar(['cost', '--since', 'a week']).stderr,
      /--since: "a week" is not a duration; use e\.g\..* 7d/,
    );
  });
});

function waitForLine(stream: NodeJS.ReadableStream, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(
      () => reject(new Error(`no "${text}" within 20 s; saw ${JSON.stringify(seen)}`)),
      20_000,
    );
    stream.on('data', (d: Buffer) => {
      seen += d.toString();
      if (seen.includes(text)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}
