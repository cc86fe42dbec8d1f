import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JobSpec } from '../jobs/spec.js';
import { parseYaml } from './yaml.js';

const fails = (text: string) => assert.throws(() => parseYaml(text, 'job.yaml', JobSpec));

function messageOf(text: string): string {
  try {
    parseYaml(text, 'job.yaml', JobSpec);
  } catch (err) {
    return (err as Error).message;
  }
  return assert.fail('expected an error');
}

test('a valid job file parses', () => {
  const j = parseYaml(
    'name: build\ncommand: [make, all]\nresources:\n  memory: 512Mi\n',
    'job.yaml',
    JobSpec,
  );
  assert.deepEqual(j.command, ['make', 'all']);
  assert.equal(j.limits.memoryBytes, 512 * 2 ** 20);
});

test('schema errors carry the file and the line of the offending value', () => {
  const text = 'name: build\ncommand: make\nresources:\n  cpus: 1\n  memory: lots\n';
  assert.match(messageOf(text), /^job\.yaml:5: resources\.memory: "lots" is not a size/);
});

test('an unknown key is reported at its own line', () => {
  const text = 'name: build\ncommand: make\nresources:\n  cpus: 1\n\n  memroy: 1Gi\n';
  assert.match(messageOf(text), /^job\.yaml:6: resources: unknown field "memroy"/);
});

test('broken YAML is reported with its line, not a stack trace', () => {
  fails('name: [unclosed\ncommand: x\n');
  assert.match(messageOf('name: a\n  bad: indent: here\n'), /^job\.yaml:\d+: not valid YAML/);
  assert.match(messageOf('name: a\nname: b\ncommand: x\n'), /not valid YAML/);
});
