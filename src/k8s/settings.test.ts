import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '../config/config.js';
import { UserError } from '../lib/errors.js';

/** What the API server would refuse in a RuntimeClass or a Pod is refused when the config is read, naming the field. */
async function refusal(t: { after(fn: () => void): void }, yaml: string): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), 'boxcar-k8s-settings-'));
  t.after(() => rmSync(dir, { recursive: true }));
  const file = path.join(dir, 'config.yaml');
  writeFileSync(file, yaml);
  try {
    await loadConfig({ config: file });
  } catch (err) {
    assert.ok(err instanceof UserError, String(err));
    return err.message.replace(`${file}:`, '');
  }
  assert.fail('the config was accepted');
}

test('the defaults: the seed’s handlers, boxcar namespaces, no image', async () => {
  const c = await loadConfig({ config: '/dev/null' });
  assert.equal(c.kubernetes.runtime_classes.firecracker.handler, 'firecracker');
  assert.equal(c.kubernetes.runtime_classes.gvisor.handler, 'runsc');
  assert.equal(c.kubernetes.namespace_prefix, 'boxcar-');
  assert.equal(c.kubernetes.image, undefined);
});

test('tolerations and node selectors the API server would refuse', async (t) => {
  const rc = (body: string) => `kubernetes:\n  runtime_classes:\n    gvisor:\n      ${body}\n`;
  assert.match(
    await refusal(t, rc('tolerations: [{ key: sandbox, operator: Exists, value: gvisor }]')),
    /kubernetes\.runtime_classes\.gvisor\.tolerations\[0\]\.value: operator Exists takes no value/,
  );
  assert.match(
    await refusal(t, rc('tolerations: [{ key: sandbox, value: x, tolerationSeconds: 30 }]')),
    /tolerations\[0\]\.tolerationSeconds: only a NoExecute toleration/,
  );
  assert.match(
    await refusal(t, rc("node_selector: { 'bad key!': x }")),
    /node_selector\.bad key!: is not a label key; use e\.g\. boxcar\.dev\/sandbox/,
  );
  assert.match(await refusal(t, rc('handler: Kata_FC')), /handler: a handler is a DNS label/);
});
