import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { leftovers, testBoxcar } from '../testing/harness.js';
import { BOXCAR_MAIN } from '../testing/serve-process.js';
import { jobLogMetadataPath, jobLogPath } from './job-log.js';

/**
 * A job's stored log read as the shipped log-shipper configs read it (examples/logging): the
 * `cri` parser's regex and time format, taken from the example's parsers.conf itself, Fluent
 * Bit's CRI multiline rule (P lines continue into the next), the job id from the file name by
 * the example's Tag_Regex, and the metadata file as its Lua filter reads it.
 */
const EXAMPLES = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../examples/logging');
type Box = Awaited<ReturnType<typeof testBoxcar>>;
let box: Box;
before(async () => {
  box = await testBoxcar();
});
after(async () => {
  const left = await leftovers(box.paths);
  await box.cleanup();
  assert.deepEqual(left, []);
});

/** A setting of one `[PARSER]` section of a Fluent Bit parsers file. */
function parserSetting(file: string, parser: string, key: string): string {
  const sections = readFileSync(file, 'utf8').split('[PARSER]');
  const section = sections.find((s) => new RegExp(`^\\s*Name\\s+${parser}\\s*$`, 'm').test(s));
  const value = section && new RegExp(`^\\s*${key}\\s+(.+)$`, 'm').exec(section)?.[1];
  if (!value) throw new Error(`${file}: no ${key} in parser ${parser}`);
  return value.trim();
}

/** Fluent Bit's strptime format as a regex (the conversions it uses here). */
function timeFormatRegex(format: string): RegExp {
  const parts: Record<string, string> = {
    '%Y': '\\d{4}',
    '%m': '\\d{2}',
    '%d': '\\d{2}',
    '%H': '\\d{2}',
    '%M': '\\d{2}',
    '%S': '\\d{2}',
    '%L': '\\d+',
    '%z': '(?:Z|[+-]\\d{2}:?\\d{2})',
  };
  const escaped = format.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${escaped.replace(/%[A-Za-z]/g, (c) => parts[c] ?? c)}$`);
}

test('a job’s log parses with Fluent Bit’s cri parser, its lines joined and labelled as the examples do', async () => {
  const t0 = Date.now();
  const { record } = await box.runJob({
    runtime: 'runc',
    command: ['sh', '-c', 'echo "out line"; echo "err line" >&2; printf "no newline"'],
  });
  assert.equal(record.state, 'succeeded');
  const file = jobLogPath(box.paths, record.id);
  const parsers = path.join(EXAMPLES, 'parsers.conf');
  const regex = new RegExp(parserSetting(parsers, 'cri', 'Regex'));
  const time = timeFormatRegex(parserSetting(parsers, 'cri', 'Time_Format'));
  const records = readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const m = regex.exec(line);
      assert.ok(m?.groups, `a line the cri parser reads: ${line}`);
      assert.match(m.groups.time as string, time);
      const at = Date.parse(m.groups.time as string);
      assert.ok(at >= t0 - 1000 && at <= Date.now() + 1000, 'the time the line was written');
      return m.groups as { stream: string; logtag: string; message: string };
    });
  // Fluent Bit's CRI multiline: a P record continues into the next one of its stream.
  const joined: Array<{ stream: string; message: string }> = [];
  let partial: Record<string, string> = {};
  for (const r of records) {
    const text = (partial[r.stream] ?? '') + r.message;
    if (r.logtag === 'P') partial = { ...partial, [r.stream]: text };
    else {
      joined.push({ stream: r.stream, message: text });
      partial = { ...partial, [r.stream]: '' };
    }
  }
  for (const [stream, text] of Object.entries(partial)) if (text) joined.push({ stream, message: text });
  assert.deepEqual(
    joined.sort((a, b) => a.message.localeCompare(b.message)),
    [
      { stream: 'stderr', message: 'err line' },
      { stream: 'stdout', message: 'no newline' },
      { stream: 'stdout', message: 'out line' },
    ],
  );
  // The job id from the file name, by the example's Tag_Regex.
  const tagRegex = /^\s*Tag_Regex\s+(.+)$/m.exec(
    readFileSync(path.join(EXAMPLES, 'fluent-bit.conf'), 'utf8'),
  )?.[1];
  assert.equal(new RegExp(tagRegex as string).exec(file)?.groups?.job_id, record.id);
  // The metadata file, as the Lua filter reads it: flat "key":"string" pairs.
  const metaText = readFileSync(jobLogMetadataPath(box.paths, record.id), 'utf8');
  const meta = Object.fromEntries([...metaText.matchAll(/"([\w]+)":"([^"]*)"/g)].map((m) => [m[1], m[2]]));
  assert.deepEqual(
    { job_id: meta.job_id, tenant: meta.tenant, runtime: meta.runtime, trust: meta.trust },
    { job_id: record.id, tenant: 'test', runtime: 'runc', trust: 'trusted' },
  );
});

test('service logs are JSON lines with an RFC 3339 time, the level by name, and the job they are about', () => {
  const r = spawnSync(
    process.execPath,
    [BOXCAR_MAIN, '--state', box.paths.root, 'run', '--json', '--', 'true'],
    {
      encoding: 'utf8',
      env: { ...process.env, BOXCAR_LOG_LEVEL: 'info' },
      timeout: 60_000,
    },
  );
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stderr
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const started = lines.find((l) => l.msg === 'job started');
  assert.ok(started, r.stderr);
  assert.equal(started.level, 'info');
  assert.match(started.time as string, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  assert.equal(started.job_id, (JSON.parse(r.stdout) as { id: string }).id);
  assert.equal(started.runtime, 'runc');
  assert.equal(started.tenant, 'local');
});
