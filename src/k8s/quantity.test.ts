import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bytesOf, cpuQuantity, cpuSpec, memoryQuantity, quantityThousandths } from './quantity.js';

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

test('quantities are read as the API server reads them, rounding up what is below a unit', () => {
  assert.equal(bytesOf('224Mi'), 224 * 2 ** 20);
  assert.equal(bytesOf('1G'), 1e9);
  assert.equal(bytesOf('1e3'), 1000);
  assert.equal(bytesOf('1500m'), 2);
  assert.equal(quantityThousandths('250m'), 250);
  assert.equal(quantityThousandths('0.5'), 500);
  assert.equal(quantityThousandths('1k'), 1_000_000);
  assert.equal(quantityThousandths('123456789n'), 124); // metrics-server's nanocores
  assert.equal(quantityThousandths('1500u'), 2);
  assert.throws(() => quantityThousandths('12 Mi'), /not a Kubernetes quantity; use e\.g\. 256Mi/);
});
