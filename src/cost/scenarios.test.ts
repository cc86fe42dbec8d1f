import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dollars } from './money.js';
import { migrationRoi, scenarioTable, SEED_INPUTS } from './scenarios.js';

test('the seed’s inputs give its table: $8,000, $18,000, $11,000 and $7,100 a month', () => {
  const rows = scenarioTable(SEED_INPUTS);
  assert.deepEqual(
    rows.map((r) => [r.memory, r.cpu, r.total]),
    [
      [dollars(5000), dollars(3000), dollars(8000)],
      [dollars(15000), dollars(3000), dollars(18000)],
      [dollars(8000), dollars(3000), dollars(11000)],
      [dollars(4100), dollars(3000), dollars(7100)],
    ],
  );
  assert.deepEqual(
    rows.map((r) => Math.round(r.vsBaseline * 10000) / 100),
    [0, 125, 37.5, -11.25],
  );
});

test('and its ROI: $46,800 saved a year, payback in 1.07 years, 180% over three years', () => {
  const roi = migrationRoi(scenarioTable(SEED_INPUTS), SEED_INPUTS.migration);
  assert.equal(roi.annualSavings, dollars(46_800));
  assert.equal(roi.paybackYears.toFixed(2), '1.07');
  assert.equal(Math.floor(roi.roi3Years * 100), 180);
});

test('section 3.2’s 5 MB per microVM job would give $4,250, not the table’s $4,100', () => {
  const rows = scenarioTable({ ...SEED_INPUTS, jobMiB: { ...SEED_INPUTS.jobMiB, firecracker: 5 } });
  assert.equal(rows[3]?.memory, dollars(4250));
});
