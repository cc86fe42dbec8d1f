import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { OutputChunk } from '../lib/follow.js';
import { MASK, OutputMasker } from './masking.js';

const masked = (secrets: string[], pieces: string[], stream: OutputChunk['stream'] = 'stdout') => {
  const m = new OutputMasker(secrets);
  const out = pieces.flatMap((text) => m.push({ stream, text }));
  return [...out, ...m.flush()].map((c) => c.text).join('');
};

test('a secret is masked whole, also when split across chunks, and nothing else is held back', () => {
  const secret = 's3cr3t-VALUE-42';
  assert.equal(masked([secret], [`token=${secret}\n`]), `token=${MASK}\n`);
  assert.equal(masked([secret], ['token=s3cr', '3t-VALUE', '-42 done\n']), `token=${MASK} done\n`);
  assert.equal(masked([secret], [...`x${secret}y`]), `x${MASK}y`, 'one character per chunk');
  const m = new OutputMasker([secret]);
  assert.deepEqual(m.push({ stream: 'stdout', text: 'progress 10%\n' }), [
    { stream: 'stdout', text: 'progress 10%\n' },
  ]);
  assert.deepEqual(m.push({ stream: 'stdout', text: 'almost s3c' }), [{ stream: 'stdout', text: 'almost ' }]);
  assert.deepEqual(m.flush(), [{ stream: 'stdout', text: 's3c' }], 'a prefix that never completed is shown');
});

test('overlapping and nested values: the longest wins where both start; multi-line values line by line', () => {
  assert.equal(masked(['abc', 'abcdef'], ['ab', 'cd', 'ef!']), `${MASK}!`);
  assert.equal(masked(['abc', 'abcdef'], ['abc', 'dx']), `${MASK}dx`);
  assert.equal(masked(['bcd', 'dXXXXXXXX'], ['abcd', 'XXXXXXXX']), `a${MASK}XXXXXXXX`);
  const key = '-----BEGIN KEY-----\nAAAAbbbbCCCCdddd\nEEEEffff\n-----END KEY-----';
  assert.equal(masked([key], ['line: AAAAbbbbCCCCdddd\n']), `line: ${MASK}\n`);
  assert.equal(masked([key], [`${key}\n`]), `${MASK}\n`);
  assert.equal(masked([], ['nothing to hide']), 'nothing to hide');
});

test('streams are masked apart: stdout and stderr each have their own held tail', () => {
  const m = new OutputMasker(['TOPSECRET']);
  const out = [
    ...m.push({ stream: 'stdout', text: 'TOP' }),
    ...m.push({ stream: 'stderr', text: 'err TOP' }),
    ...m.push({ stream: 'stdout', text: 'SECRET\n' }),
    ...m.push({ stream: 'stderr', text: 'SECRET\n' }),
    ...m.flush(),
  ];
  assert.equal(
    out
      .filter((c) => c.stream === 'stdout')
      .map((c) => c.text)
      .join(''),
    `${MASK}\n`,
  );
  assert.equal(
    out
      .filter((c) => c.stream === 'stderr')
      .map((c) => c.text)
      .join(''),
    `err ${MASK}\n`,
  );
});

test('property: however the output is cut into chunks, the result is the whole output masked at once', () => {
  const alphabet = fc.constantFrom('a', 'b', 'c', '\n');
  const word = fc.string({ unit: alphabet, minLength: 1, maxLength: 6 });
  fc.assert(
    fc.property(
      fc.array(word, { minLength: 1, maxLength: 3 }),
      fc.string({ unit: alphabet, maxLength: 60 }),
      fc.array(fc.nat(60), { maxLength: 8 }),
      (secrets, text, cuts) => {
        const points = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
        const pieces = [0, ...points, text.length]
          .slice(1)
          .map((end, i, all) => text.slice(i ? all[i - 1] : 0, end));
        const longestFirst = [...new Set(secrets)].sort((a, b) => b.length - a.length);
        const whole = text.replace(
          new RegExp(longestFirst.map((v) => v.replace(/\n/g, '\\n')).join('|'), 'g'),
          MASK,
        );
        return masked(secrets, pieces) === whole;
      },
    ),
    { numRuns: 3000 },
  );
});
