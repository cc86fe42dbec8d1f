import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseYaml } from '../lib/yaml.js';
import { loadPolicy } from './load-policy.js';
import { PolicyFile, parseFallbackCondition } from './policy-schema.js';

const SEED_2_2 = `# 路由策略
routing_policy:
  trusted_code:
    runtime: runc
    conditions:
      - source: internal_repo
      - user_group: internal_team
  untrusted_code:
    runtime: firecracker # 首选：性能最优
    fallback: gvisor # 备选：兼容性更好
    conditions:
      - source: external_pr
      - user_group: external_contributor
`;

const SEED_9_2 = `routing_policy:
  untrusted_code:
    runtime: firecracker
    fallback: gvisor # 自动回滚
    fallback_conditions:
      - firecracker_failure_rate > 0.01
      - firecracker_available < 0.5
`;

const errorOf = (text: string) => {
  try {
    parseYaml(text, 'policy.yaml', PolicyFile);
  } catch (err) {
    return (err as Error).message;
  }
  return assert.fail('expected the policy to be refused');
};

test('the seed’s policy excerpts (sections 2.2 and 9.2) are accepted verbatim', () => {
  const a = parseYaml(SEED_2_2, 'seed-2.2.yaml', PolicyFile).routing_policy;
  assert.equal(a.trusted_code?.runtime, 'runc');
  assert.deepEqual(a.trusted_code?.conditions, [
    { key: 'source', value: 'internal_repo' },
    { key: 'user_group', value: 'internal_team' },
  ]);
  assert.equal(a.untrusted_code.canary_percent, 100);
  const b = parseYaml(SEED_9_2, 'seed-9.2.yaml', PolicyFile).routing_policy;
  assert.equal(b.trusted_code, undefined, 'no trusted section: nothing is trusted');
  assert.deepEqual(
    b.untrusted_code.fallback_conditions.map((c) => [c.runtime, c.metric, c.op, c.value]),
    [
      ['firecracker', 'failure_rate', '>', 0.01],
      ['firecracker', 'available', '<', 0.5],
    ],
  );
});

test('the shipped default policy loads, with breaker tuning', async () => {
  const p = await loadPolicy();
  assert.equal(p.untrusted_code.runtime, 'firecracker');
  assert.equal(p.untrusted_code.fallback, 'gvisor');
  assert.equal(p.lightweight?.runtime, 'wasm');
  assert.equal(p.breaker.cooldown, 30_000);
});

test('an unknown runtime is refused with the file, the line and the value', () => {
  const msg = errorOf(SEED_2_2.replace('runtime: firecracker', 'runtime: firecrackr'));
  assert.match(
    msg,
    /^policy\.yaml:9: routing_policy\.untrusted_code\.runtime: "firecrackr" is not valid; must be one of runc, gvisor, firecracker, wasm/,
  );
});

test('unknown keys, conditions and operators are refused by name', () => {
  assert.match(
    errorOf(SEED_2_2.replace('    fallback: gvisor', '    fallbak: gvisor')),
    /policy\.yaml:10: routing_policy\.untrusted_code: unknown field "fallbak"/,
  );
  assert.match(
    errorOf(SEED_2_2.replace('- source: external_pr', '- sorce: external_pr')),
    /policy\.yaml:12: .*unknown condition "sorce"/,
  );
  assert.match(errorOf(SEED_9_2.replace('> 0.01', '=> 0.01')), /policy\.yaml:6: .*unknown operator "=>"/);
  assert.match(
    errorOf(SEED_9_2.replace('firecracker_available', 'firecracker_avail')),
    /unknown metric "avail"/,
  );
  assert.match(
    errorOf(SEED_9_2.replace('firecracker_failure_rate', 'kata_failure_rate')),
    /unknown runtime "kata"/,
  );
  assert.match(
    errorOf(SEED_2_2.replace('runtime: firecracker', 'runtime: runc')),
    /untrusted code never runs on runc/,
  );
});

test('fallback conditions parse with or without spaces', () => {
  const r = parseFallbackCondition('gvisor_failure_rate>=0.2');
  assert.ok(r.ok);
  assert.deepEqual(r.ok && [r.value.runtime, r.value.metric, r.value.op, r.value.value], [
    'gvisor',
    'failure_rate',
    '>=',
    0.2,
  ]);
  assert.equal(parseFallbackCondition('firecracker_failure_rate > lots').ok, false);
});
