import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { followFile, k8sFileDecoder, parseK8sLogLine, rawDecoder } from './follow.js';

test('conmon log lines: full lines get their newline back, partial ones do not', () => {
  assert.deepEqual(parseK8sLogLine('2026-11-22T02:11:12.855115135+00:00 stdout F hi'), {
    stream: 'stdout',
    text: 'hi\n',
  });
  assert.deepEqual(parseK8sLogLine('2026-11-22T02:11:12.855115135+00:00 stderr P part'), {
    stream: 'stderr',
    text: 'part',
  });
  assert.deepEqual(parseK8sLogLine('2026-11-22T02:11:12.855115135+00:00 stdout F '), {
    stream: 'stdout',
    text: '\n',
  });
  assert.deepEqual(parseK8sLogLine('2026-11-22T02:11:12Z stdout F a b  c'), {
    stream: 'stdout',
    text: 'a b  c\n',
  });
  assert.equal(parseK8sLogLine('garbage'), undefined);
});

/** Follows `file` (created with `initial`) while `write` appends to it, then returns what was read. */
async function followWhile(
  format: 'k8s-file' | 'raw',
  initial: string,
  write: (file: string) => Promise<void>,
): Promise<string[]> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bx-log-'));
  try {
    const file = path.join(dir, 'job.log');
    await writeFile(file, initial);
    let done = false;
    const seen: string[] = [];
    const reading = (async () => {
      for await (const c of followFile(file, format === 'raw' ? rawDecoder : k8sFileDecoder, {
        follow: true,
        isDone: async () => done,
      }))
        seen.push(c.text);
    })();
    await new Promise((r) => setTimeout(r, 50));
    await write(file);
    done = true;
    await reading;
    return seen;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('following a log sees lines written later and stops when the job is done', async () => {
  const seen = await followWhile('k8s-file', 'T stdout F one\n', async (file) => {
    await appendFile(file, 'T stderr P tw\n'); // conmon writes a partial line as its own P record
    await appendFile(file, 'T stderr F o\nT stdout F three\n');
  });
  assert.equal(seen.join(''), 'one\ntwo\nthree\n');
});

test('a log truncated at its size cap is read again from the top, with a note', async () => {
  const seen = await followWhile('k8s-file', 'T stdout F aaaaaaaaaaaaaaaaaaaa\n', async (file) => {
    await truncate(file, 0);
    await appendFile(file, 'T stdout F b\n');
    await new Promise((r) => setTimeout(r, 400));
  });
  assert.equal(seen[0], 'aaaaaaaaaaaaaaaaaaaa\n');
  assert.match(seen.join(''), /log size cap/);
  assert.equal(seen.at(-1), 'b\n');
});

test('a raw log (WASM jobs) is passed through as it is written', async () => {
  const seen = await followWhile('raw', 'partial line', (file) => appendFile(file, ' and the rest\n'));
  assert.equal(seen.join(''), 'partial line and the rest\n');
});
