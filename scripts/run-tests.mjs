// The test command (`npm test`, `make test`, `.ci/run`): lint, then every compiled *.test.js.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';

function testFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return testFiles(p);
    return e.name.endsWith('.test.js') ? [p] : [];
  });
}

const step = (cmd, args) => {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};

step('npx', ['--no-install', 'eslint', 'src', 'bench']);
step('npx', ['--no-install', 'prettier', '--check', '--log-level', 'warn', '.']);
// Only tests whose source still exists: tsc never deletes the output of a removed file.
const files = testFiles('dist/src')
  .filter((f) => existsSync(f.replace(/^dist\//, '').replace(/\.js$/, '.ts')))
  .sort();
const filter = process.env.BOXCAR_TEST_FILTER;
const chosen = files.filter((f) => !filter || f.includes(filter));
// These delete and tamper with the host's one job firewall, and put test hosts on overlapping
// documentation ranges (198.51.100.0/24): one at a time, after the rest, so no other file's
// network job runs without the firewall and no two test hosts hold one address.
const ALONE = [
  'runtimes/shared/network.test.js',
  'isolation/verify.test.js',
  'isolation/verify-microvm.test.js',
];
const alone = chosen.filter((f) => ALONE.some((a) => f.endsWith(a)));
step(process.execPath, ['--test', '--test-concurrency=2', ...chosen.filter((f) => !alone.includes(f))]);
if (alone.length) step(process.execPath, ['--test', '--test-concurrency=1', ...alone]);
