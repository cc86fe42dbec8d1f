import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LogPosition, timestampKey } from './log-follow.js';

test('kubelet timestamps compare as times, whatever their fraction digits', () => {
  assert.ok(timestampKey('2026-11-29T10:00:00.5Z') > timestampKey('2026-11-29T10:00:00.123456789Z'));
  assert.equal(timestampKey('2026-11-29T10:00:01Z'), timestampKey('2026-11-29T10:00:01.000000000Z'));
  assert.throws(() => timestampKey('10:00'), /not RFC3339 in UTC/);
});

test('a resumed read skips what was emitted, lines sharing the last timestamp by count', () => {
  const p = new LogPosition();
  assert.equal(p.since(), undefined);
  const ts = ['2026-11-29T10:00:00.1Z', '2026-11-29T10:00:00.2Z', '2026-11-29T10:00:00.2Z'];
  assert.deepEqual(
    ts.map((t) => p.admit(t)),
    [true, true, true],
  );
  // sinceTime is whole seconds: the next read starts at the second's beginning.
  assert.equal(p.since(), '2026-11-29T10:00:00Z');
  p.resume();
  const again = [...ts, '2026-11-29T10:00:00.2Z', '2026-11-29T10:00:01.0Z'];
  assert.deepEqual(
    again.map((t) => p.admit(t)),
    [false, false, false, true, true],
  );
});
