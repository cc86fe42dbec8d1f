import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as incubating from '@opentelemetry/semantic-conventions/incubating';
import * as copied from './cicd-semconv.js';

/** The names Boxcar copied are those of the installed semantic conventions, value for value. */
test('every copied CI/CD name matches @opentelemetry/semantic-conventions/incubating', () => {
  const published = incubating as unknown as Record<string, unknown>;
  for (const [name, value] of Object.entries(copied)) {
    if (name === 'CICD_RESULT') {
      for (const v of Object.values(copied.CICD_RESULT)) {
        assert.equal(published[`CICD_PIPELINE_RESULT_VALUE_${v.toUpperCase()}`], v);
        assert.equal(published[`CICD_PIPELINE_TASK_RUN_RESULT_VALUE_${v.toUpperCase()}`], v);
      }
    } else if (name === 'CICD_PIPELINE_TASK_TYPE_VALUES') {
      for (const v of copied.CICD_PIPELINE_TASK_TYPE_VALUES)
        assert.equal(published[`CICD_PIPELINE_TASK_TYPE_VALUE_${v.toUpperCase()}`], v);
    } else assert.equal(published[name], value, name);
  }
});
