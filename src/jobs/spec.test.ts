import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UserError } from '../lib/errors.js';
import { JobSpec } from './spec.js';
import { parseOrThrow } from '../lib/validation.js';

test('a minimal job gets the documented defaults', () => {
  const j = parseOrThrow(JobSpec, { command: 'make test' }, 'job.yaml');
  assert.deepEqual(j.command, ['sh', '-c', 'make test']);
  assert.equal(j.name, 'job');
  assert.equal(j.limits.memoryBytes, 256 * 2 ** 20);
  assert.equal(j.limits.cpuMillis, 1000);
  assert.equal(j.limits.pids, 256);
  assert.equal(j.timeoutMs, 600_000);
  assert.equal(j.runtime, undefined);
});

test('fields are normalized: sizes to bytes, env values to strings, user_group to userGroup', () => {
  const j = parseOrThrow(
    JobSpec,
    {
      command: ['true'],
      user_group: 'internal_team',
      source: 'internal_repo',
      env: { N: 3, B: true },
      resources: { memory: '1Gi', cpus: '500m', tmp: '8Mi' },
      timeout: '90s',
    },
    'job.yaml',
  );
  assert.equal(j.userGroup, 'internal_team');
  assert.deepEqual(j.env, { N: '3', B: 'true' });
  assert.equal(j.limits.memoryBytes, 2 ** 30);
  assert.equal(j.limits.cpuMillis, 500);
  assert.equal(j.limits.tmpBytes, 8 * 2 ** 20);
  assert.equal(j.timeoutMs, 90_000);
});

function errorOf(input: unknown): string {
  try {
    parseOrThrow(JobSpec, input, 'job.yaml');
  } catch (err) {
    assert.ok(err instanceof UserError);
    return err.message;
  }
  assert.fail('expected a validation error');
}

test('errors name the field and the fix', () => {
  assert.match(
    errorOf({ command: 'x', resources: { memory: 'lots' } }),
    /resources\.memory: "lots" is not a size; use .*256Mi/,
  );
  assert.match(
    errorOf({ command: 'x', runtime: 'firecrackr' }),
    /runtime: "firecrackr" is not valid; must be one of runc, gvisor, firecracker, wasm/,
  );
  assert.match(errorOf({ command: 'x', resources: { memroy: '1Gi' } }), /resources: unknown field "memroy"/);
  assert.match(errorOf({}), /command: is required/);
  assert.match(errorOf({ command: [] }), /command: give the command to run/);
  assert.match(errorOf({ command: 5 }), /command: expected string or array, got number 5/);
  assert.match(errorOf({ command: 'x', env: { '1BAD': 'v' } }), /env\.1BAD/);
  assert.match(
    errorOf({ command: 'x', source: 'internet' }),
    /source: "internet" is not valid; must be one of internal_repo, external_pr/,
  );
  assert.match(errorOf({ command: 'x', resources: { pids: 2 } }), /resources\.pids: must be at least 8/);
});
