import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatBytes, parseBytes, parseCpuMillis, parseDurationMs } from './quantity.js';

const value = <T>(r: { ok: true; value: T } | { ok: false; message: string }) => {
  assert.ok(r.ok, r.ok ? '' : r.message);
  return r.value;
};

test('sizes use Kubernetes suffixes, binary and decimal', () => {
  assert.equal(value(parseBytes('256Mi')), 256 * 2 ** 20);
  assert.equal(value(parseBytes('1Gi')), 2 ** 30);
  assert.equal(value(parseBytes('1.5Gi')), 1.5 * 2 ** 30);
  assert.equal(value(parseBytes('512M')), 512e6);
  assert.equal(value(parseBytes('1000Gi')), 1000 * 2 ** 30);
  assert.equal(value(parseBytes(4096)), 4096);
});

test('a bad size says what a good one looks like', () => {
  for (const bad of ['lots', '12XB', '-1Mi', '', 'Mi']) {
    const r = parseBytes(bad);
    assert.equal(r.ok, false, bad);
    assert.match(r.ok ? '' : r.message, /256Mi/);
  }
  assert.equal(parseBytes('0').ok, false);
});

test('CPU amounts in cores or millicores', () => {
  assert.equal(value(parseCpuMillis('1')), 1000);
  assert.equal(value(parseCpuMillis('0.5')), 500);
  assert.equal(value(parseCpuMillis('250m')), 250);
  assert.equal(value(parseCpuMillis(2)), 2000);
  assert.equal(parseCpuMillis('two').ok, false);
  assert.equal(parseCpuMillis('0.0001').ok, false);
});

test('durations with units, compound, or bare seconds', () => {
  assert.equal(value(parseDurationMs('10m')), 600_000);
  assert.equal(value(parseDurationMs('2s')), 2000);
  assert.equal(value(parseDurationMs('1h30m')), 5_400_000);
  assert.equal(value(parseDurationMs('500ms')), 500);
  assert.equal(value(parseDurationMs(30)), 30_000);
  for (const bad of ['soon', '10x', '1h foo', '0s']) assert.equal(parseDurationMs(bad).ok, false, bad);
});

test('formatBytes is readable', () => {
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(3 * 2 ** 20), '3.0 MiB');
  assert.equal(formatBytes(256 * 2 ** 20), '256 MiB');
});
