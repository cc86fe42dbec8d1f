import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JOB_STATES, canTransition, finalState, isTerminal } from './states.js';

test('terminal states have no way out, and every live state can end in error', () => {
  for (const from of JOB_STATES) {
    if (isTerminal(from)) {
      for (const to of JOB_STATES) assert.equal(canTransition(from, to), false, `${from} -> ${to}`);
    } else {
      assert.ok(canTransition(from, 'error'), `${from} -> error`);
    }
  }
  assert.ok(canTransition('queued', 'starting'));
  assert.ok(!canTransition('queued', 'succeeded'), 'a job cannot finish without starting');
});

test('finalState ranks cancel over timeout over OOM over the exit code', () => {
  const base = { exitCode: 137, oomKilled: true, timedOut: true, cancelled: true };
  assert.equal(finalState(base), 'cancelled');
  assert.equal(finalState({ ...base, cancelled: false }), 'timeout');
  assert.equal(finalState({ ...base, cancelled: false, timedOut: false }), 'oom');
  assert.equal(finalState({ exitCode: 3, oomKilled: false, timedOut: false, cancelled: false }), 'failed');
  assert.equal(finalState({ exitCode: 0, oomKilled: false, timedOut: false, cancelled: false }), 'succeeded');
  assert.equal(
    finalState({ exitCode: 0, oomKilled: true, timedOut: false, cancelled: false }),
    'succeeded',
    'a job that survived an OOM-killed child succeeded',
  );
});
