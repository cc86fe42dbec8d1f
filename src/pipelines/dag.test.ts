import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { JobState } from '../jobs/states.js';
import { evaluate, type AttemptOutcome, type PipelineJobStatus } from './dag.js';
import { planOf, PipelineSpec, type PipelinePlan } from './plan.js';

const plan = (raw: unknown): PipelinePlan => planOf(PipelineSpec.parse(raw));
const refused = (raw: unknown) => {
  const r = PipelineSpec.safeParse(raw);
  assert.equal(r.success, false);
  return r.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') ?? '';
};

/** A pipeline driven by hand: each job's attempts end as the test says. */
class Run {
  status: Record<string, PipelineJobStatus> = {};
  outcomes = new Map<string, AttemptOutcome>();
  cancel = false;
  private n = 0;
  constructor(readonly plan: PipelinePlan) {}

  /** One evaluation, applied: started jobs get an attempt (running), skipped ones their reason. */
  step() {
    const s = evaluate(this.plan, this.status, (id) => this.outcomes.get(id), this.cancel);
    for (const k of s.skip)
      this.status[k.name] = { attempts: this.status[k.name]?.attempts ?? [], skipped: k.why };
    for (const x of [...s.start, ...s.retry]) {
      const id = `${x.job.name}#${this.n++}`;
      this.status[x.job.name] = { attempts: [...(this.status[x.job.name]?.attempts ?? []), id] };
      this.outcomes.set(id, { state: 'running', infraFailure: false });
    }
    return s;
  }

  /** Steps until nothing more changes now; returns the names started along the way. */
  settle(): { started: string[]; state: string } {
    const started: string[] = [];
    for (;;) {
      const s = this.step();
      started.push(...[...s.start, ...s.retry].map((x) => x.job.name));
      if (!s.start.length && !s.retry.length && !s.skip.length) return { started, state: s.state };
    }
  }

  end(name: string, state: JobState, infraFailure = false) {
    const id = this.status[name]?.attempts.at(-1) as string;
    this.outcomes.set(id, { state, infraFailure });
  }
}

const job = (name: string, extra: Record<string, unknown> = {}) => ({ name, command: 'true', ...extra });

describe('pipeline plans', () => {
  test('stages order jobs: a job without needs waits for every job of the earlier stages', () => {
    const p = plan({
      name: 'p',
      stages: ['build', 'test'],
      jobs: [job('b', { stage: 'build' }), job('t1', { stage: 'test' }), job('t2', { stage: 'test' })],
    });
    assert.deepEqual(
      p.jobs.map((j) => [j.name, j.after]),
      [
        ['b', []],
        ['t1', ['b']],
        ['t2', ['b']],
      ],
    );
    const defaults = plan({ name: 'p', jobs: [job('a'), job('b')] });
    assert.deepEqual(
      defaults.jobs.map((j) => [j.stage, j.after]),
      [
        ['test', []],
        ['test', []],
      ],
      "GitLab's default: stage test, side by side",
    );
  });

  test('pipeline variables reach every job, the job’s own win', () => {
    const p = plan({
      name: 'p',
      variables: { A: 'pipe', B: 1 },
      jobs: [job('x', { variables: { A: 'job' }, env: { C: 'env' } })],
    });
    assert.deepEqual(p.jobs[0]?.spec.env, { A: 'job', B: '1', C: 'env' });
  });

  test('mistakes are named: unknown needs, a later stage, a circle, a duplicate, an unknown stage', () => {
    assert.match(
      refused({ name: 'p', jobs: [job('a', { needs: ['nope'] })] }),
      /jobs\.0\.needs\.0: no job is named "nope"/,
    );
    assert.match(
      refused({
        name: 'p',
        stages: ['a', 'b'],
        jobs: [job('x', { stage: 'a', needs: ['y'] }), job('y', { stage: 'b' })],
      }),
      /"y" is in a later stage/,
    );
    assert.match(
      refused({ name: 'p', jobs: [job('x', { needs: ['y'] }), job('y', { needs: ['x'] })] }),
      /needs go round in a circle: x → y → x/,
    );
    assert.match(refused({ name: 'p', jobs: [job('x'), job('x')] }), /"x" names two jobs/);
    assert.match(
      refused({ name: 'p', jobs: [job('x', { stage: 'lint' })] }),
      /"lint" is not one of the stages \(build, test, deploy\)/,
    );
    assert.match(refused({ name: 'p', jobs: [job('x', { retry: 3 })] }), /at most 2 retries/);
  });
});

describe('pipeline DAG', () => {
  test('needs: jobs whose needs are met run side by side; a job waits for all it needs', () => {
    const r = new Run(
      plan({
        name: 'p',
        jobs: [
          job('a', { needs: [] }),
          job('b', { needs: [] }),
          job('c', { needs: ['a'] }),
          job('d', { needs: ['a', 'b'] }),
        ],
      }),
    );
    assert.deepEqual(r.settle().started, ['a', 'b']);
    r.end('a', 'succeeded');
    assert.deepEqual(r.settle().started, ['c'], 'd still waits for b');
    r.end('b', 'succeeded');
    assert.deepEqual(r.settle().started, ['d']);
    r.end('c', 'succeeded');
    r.end('d', 'succeeded');
    assert.equal(r.settle().state, 'succeeded');
  });

  test('a failure skips what needs it, runs on_failure jobs, and fails the pipeline', () => {
    const r = new Run(
      plan({
        name: 'p',
        stages: ['build', 'test', 'cleanup'],
        jobs: [
          job('build', { stage: 'build' }),
          job('test', { stage: 'test' }),
          job('report', { stage: 'cleanup', when: 'on_failure' }),
          job('always', { stage: 'cleanup', when: 'always' }),
          job('deploy', { stage: 'cleanup' }),
        ],
      }),
    );
    r.settle();
    r.end('build', 'failed');
    const s = r.settle();
    assert.deepEqual(s.started, ['report', 'always']);
    assert.equal(r.status.test?.skipped, 'build failed');
    assert.equal(r.status.deploy?.skipped, 'build failed');
    r.end('report', 'succeeded');
    r.end('always', 'succeeded');
    assert.equal(r.settle().state, 'failed');
  });

  test('allow_failure: a failed job does not stop the jobs after it or fail the pipeline', () => {
    const r = new Run(
      plan({
        name: 'p',
        stages: ['a', 'b'],
        jobs: [
          job('flaky', { stage: 'a', allow_failure: true }),
          job('next', { stage: 'b' }),
          job('onfail', { stage: 'b', when: 'on_failure' }),
        ],
      }),
    );
    r.settle();
    r.end('flaky', 'failed');
    assert.deepEqual(r.settle().started, ['next']);
    assert.match(r.status.onfail?.skipped ?? '', /nothing before it failed/);
    r.end('next', 'succeeded');
    assert.equal(r.settle().state, 'succeeded');
  });

  test('retry: an infrastructure failure is retried up to max, a script failure only when asked', () => {
    const r = new Run(
      plan({
        name: 'p',
        jobs: [job('infra', { retry: 1 }), job('script', { retry: { max: 2, when: ['script_failure'] } })],
      }),
    );
    r.settle();
    r.end('infra', 'error', true);
    r.end('script', 'failed');
    assert.deepEqual(r.settle().started.sort(), ['infra', 'script']);
    r.end('infra', 'error', true);
    r.end('script', 'failed');
    assert.deepEqual(r.settle().started, ['script'], 'infra used its one retry');
    r.end('script', 'succeeded');
    assert.equal(r.settle().state, 'failed');
    assert.equal(r.status.infra?.attempts.length, 2);
    assert.equal(r.status.script?.attempts.length, 3);
  });

  test('a job error that is its own (not the infrastructure’s) is not retried by default', () => {
    const r = new Run(plan({ name: 'p', jobs: [job('x', { retry: 2 })] }));
    r.settle();
    r.end('x', 'error', false);
    assert.equal(r.settle().state, 'failed');
  });

  test('cancel: nothing more starts, the pipeline ends cancelled once its running jobs have', () => {
    const r = new Run(
      plan({
        name: 'p',
        stages: ['a', 'b'],
        jobs: [job('first', { stage: 'a' }), job('second', { stage: 'b' })],
      }),
    );
    r.settle();
    r.cancel = true;
    assert.equal(r.settle().state, 'running', 'first still runs');
    r.end('first', 'cancelled');
    assert.equal(r.settle().state, 'cancelled');
    assert.equal(r.status.second?.skipped, 'the pipeline was cancelled');
  });

  test('artifacts come from the jobs a job needs that keep some; without needs from every earlier job', () => {
    const p = plan({
      name: 'p',
      stages: ['build', 'test'],
      jobs: [
        job('bin', { stage: 'build', artifacts: { paths: ['out/'] } }),
        job('docs', { stage: 'build', artifacts: { paths: ['site/'] } }),
        job('lint', { stage: 'build' }),
        job('unit', { stage: 'test', needs: ['bin', 'lint'] }),
        job('all', { stage: 'test' }),
      ],
    });
    const r = new Run(p);
    r.settle();
    for (const n of ['bin', 'docs', 'lint']) r.end(n, 'succeeded');
    const s = r.step();
    assert.deepEqual(Object.fromEntries(s.start.map((x) => [x.job.name, x.artifactsFrom])), {
      unit: ['bin'],
      all: ['bin', 'docs'],
    });
  });
});
