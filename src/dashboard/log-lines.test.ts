import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LogParser, renderLine, type LogEvent } from './log-lines.js';

const PLAIN = { bold: false, dim: false, italic: false, underline: false };
const parse = (...chunks: string[]) => {
  const p = new LogParser();
  const out: LogEvent[] = chunks.flatMap((c) => p.push(c));
  return [...out, ...p.finish()];
};
const text = (e: LogEvent) => ('s' in e ? e.s.map((s) => s.t).join('') : '');

test('SGR colours and styles become spans; other escapes and control bytes are dropped', () => {
  const { spans } = renderLine(
    'a\x1b[1;31mred\x1b[0m \x1b[38;5;208mor\x1b[38;2;1;2;3mrgb\x1b[2K\x1b]0;title\x07\x07end',
    PLAIN,
  );
  assert.deepEqual(spans, [
    { t: 'a' },
    { t: 'red', c: 'b f1' },
    { t: ' ' },
    { t: 'or', fg: '#ff8700' },
    { t: 'rgbend', fg: '#010203' },
  ]);
  assert.deepEqual(renderLine('\x1b[97;44mx', PLAIN).spans, [{ t: 'x', c: 'f15 g4' }]);
});

test('a style carries over to the next line, as on a terminal', () => {
  const events = parse('\x1b[32mgreen\nstill\x1b[0m\n');
  assert.deepEqual(events, [
    { k: 'line', n: 1, s: [{ t: 'green', c: 'f2' }] },
    { k: 'line', n: 2, s: [{ t: 'still', c: 'f2' }] },
  ]);
});

test('\\r progress: a finished line shows its last version; CRLF is a plain line end', () => {
  assert.deepEqual(parse('10%\r50%\r100% done\nwin\r\n').map(text), ['100% done', 'win']);
});

test('an unfinished line is sent as partial, replaced as it grows, and kept short across \\r', () => {
  const p = new LogParser();
  assert.deepEqual(p.push('10%'), [{ k: 'line', n: 1, s: [{ t: '10%' }], p: 1 }]);
  assert.deepEqual(p.push('\r20%'), [{ k: 'line', n: 1, s: [{ t: '20%' }], p: 1 }]);
  assert.deepEqual(p.push('\r30%\nnext'), [
    { k: 'line', n: 1, s: [{ t: '30%' }] },
    { k: 'line', n: 2, s: [{ t: 'next' }], p: 1 },
  ]);
  assert.deepEqual(p.finish(), [{ k: 'line', n: 2, s: [{ t: 'next' }] }]);
});

test('GitLab sections (nested, collapsed option) and GitHub groups become sections', () => {
  const events = parse(
    '\x1b[0Ksection_start:1560896352:build[collapsed=true]\r\x1b[0K\x1b[36mBuilding\x1b[0m\n',
    'compile\n',
    'section_start:1:inner\r\x1b[0KInner\n',
    'x\n',
    // Ending the outer section closes the inner one left open.
    '\x1b[0Ksection_end:1560896353:build\r\x1b[0K\n',
    '::group::Install\n',
    'npm ci\n',
    '::endgroup::\n',
    'section_end:2:never-opened\r\x1b[0K\n',
    'after\n',
  );
  assert.deepEqual(events, [
    { k: 'open', n: 1, s: [{ t: 'Building', c: 'f6' }], collapsed: true },
    { k: 'line', n: 2, s: [{ t: 'compile' }] },
    { k: 'open', n: 3, s: [{ t: 'Inner' }], collapsed: false },
    { k: 'line', n: 4, s: [{ t: 'x' }] },
    { k: 'close' },
    { k: 'close' },
    { k: 'open', n: 5, s: [{ t: 'Install' }], collapsed: true },
    { k: 'line', n: 6, s: [{ t: 'npm ci' }] },
    { k: 'close' },
    { k: 'line', n: 7, s: [{ t: 'after' }] },
  ]);
});

test('a section marker split across chunks is still a marker', () => {
  const events = parse('section_sta', 'rt:1:a\r', 'Title\nin\n', 'section_end:2:a\r\n');
  assert.deepEqual(
    events.filter((e) => !('p' in e)),
    [
      { k: 'open', n: 1, s: [{ t: 'Title' }], collapsed: false },
      { k: 'line', n: 2, s: [{ t: 'in' }] },
      { k: 'close' },
    ],
  );
});

test('markup in the output is text in spans, never anything else', () => {
  const [e] = parse('<script>alert(1)</script> \x1b[31m<b>x</b>\n');
  assert.deepEqual(e, {
    k: 'line',
    n: 1,
    s: [{ t: '<script>alert(1)</script> ' }, { t: '<b>x</b>', c: 'f1' }],
  });
});

test('line numbers can start past a skipped head of the log', () => {
  const p = new LogParser(1001);
  assert.deepEqual(p.push('a\n'), [{ k: 'line', n: 1001, s: [{ t: 'a' }] }]);
});
