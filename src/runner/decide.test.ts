import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JobSpec, type RuntimeName } from '../jobs/spec.js';
import { loadPolicy } from '../policy/load-policy.js';
import type { Fingerprint } from '../runtimes/runtime.js';
import { decideLocally } from './local.js';

/**
 * Routing fingerprints only what the router asks about (each fingerprint starts processes), and
 * decides as it would with every runtime fingerprinted.
 */
async function deciding(unusable: RuntimeName[], input: Record<string, unknown>) {
  const asked: RuntimeName[] = [];
  const deps = {
    policy: await loadPolicy(),
    store: { recentStarts: async () => [] },
    runtimes: {
      fingerprint: async (runtime: RuntimeName): Promise<Fingerprint> => {
        asked.push(runtime);
        const usable = !unusable.includes(runtime);
        return { runtime, usable, reason: usable ? 'here' : `${runtime} is missing`, details: {} };
      },
    },
  };
  const decision = await decideLocally(deps, 'job-1', JobSpec.parse({ command: ['true'], ...input }));
  return { decision, asked: [...new Set(asked)].sort() };
}

test('a trusted job fingerprints nothing to be routed: it goes to runc whatever the sandboxes are', async () => {
  const { decision, asked } = await deciding(['firecracker', 'gvisor', 'wasm'], {});
  assert.equal(decision.runtime, 'runc');
  assert.deepEqual(asked, []);
});

test('an untrusted job whose microVM runtime is missing here falls back to gVisor, saying why', async () => {
  const { decision, asked } = await deciding(['firecracker'], {
    source: 'external_pr',
    user_group: 'external_contributor',
  });
  assert.equal(decision.runtime, 'gvisor');
  assert.ok(asked.includes('firecracker') && asked.includes('gvisor'), asked.join());
  assert.ok(!asked.includes('runc'), 'runc is never a candidate for untrusted code');
  assert.match(decision.reasons.join('\n'), /firecracker/);
});

test('an untrusted job with both sandboxes missing goes to the fallback, which says it is missing too', async () => {
  const { decision } = await deciding(['firecracker', 'gvisor'], {
    source: 'external_pr',
    user_group: 'external_contributor',
  });
  assert.equal(decision.runtime, 'gvisor');
  assert.match(decision.reasons.join('\n'), /gvisor is not usable here either: gvisor is missing/);
});
