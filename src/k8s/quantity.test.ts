import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpuQuantity, cpuSpec, memoryQuantity } from './quantity.js';

// Expected strings are what the API server prints (resource.Quantity.String()) for these values.
test('memory prints in BinarySI, and as DecimalSI below 1Ki', () => {
  assert.equal(memoryQuantity(728 * 2 ** 20), '728Mi');
  assert.equal(memoryQuantity(1056 * 2 ** 20), '1056Mi');
  assert.equal(memoryQuantity(2 ** 30), '1Gi');
  assert.equal(memoryQuantity(1000 * 2 ** 30), '1000Gi');
  assert.equal(memoryQuantity(1500), '1500');
  assert.equal(memoryQuantity(1000), '1k');
  assert.equal(memoryQuantity(0), '0');
});

test('CPU prints in DecimalSI: 1800m, 2, 1k', () => {
  assert.equal(cpuQuantity(1800), '1800m');
  assert.equal(cpuQuantity(2000), '2');
  assert.equal(cpuQuantity(1_000_000), '1k');
  assert.equal(cpuQuantity(0), '0');
  assert.equal(cpuSpec(1_000_000), '1000');
  assert.equal(cpuSpec(250), '250m');
});

test('a fraction or a negative is refused, not rounded', () => {
  assert.throws(() => memoryQuantity(1.5), /not a whole/);
  assert.throws(() => cpuQuantity(-1), /not a whole/);
});
