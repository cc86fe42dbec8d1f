import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { leftovers, testBoxcar } from '../../testing/harness.js';
import { randomUUID } from 'node:crypto';
import { JobSpec } from '../../jobs/spec.js';
import { currentOwner } from '../../lib/owner.js';
import { decideLocally, operatorOrigin } from '../../runner/local.js';
import { executeJob } from '../../runner/execute.js';
import { sleep } from '../../lib/exec.js';
import { WORKER_OVERHEAD_BYTES } from './worker-process.js';
import { workerConfinementProblems } from './inspect.js';
import { processCgroup } from '../shared/confinement.js';

/** WASM jobs for real: the sample modules built by set-up from examples/wasm/*.c. */
const WASM = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../wasm');
const mod = (name: string) => path.join(WASM, `${name}.wasm`);
type Box = Awaited<ReturnType<typeof testBoxcar>>;

describe('wasm driver', () => {
  let box: Box;
  const job = (input: Record<string, unknown>) => box.runJob({ runtime: 'wasm', ...input });
  before(async () => {
    box = await testBoxcar();
  });
  after(async () => {
    const left = await leftovers(box.paths);
    await box.cleanup();
    assert.deepEqual(left, []);
  });

  test('a module prints a line and exits 7 through proc_exit; memory and startup are reported', async () => {
    const { record, output } = await job({ image: mod('hello') });
    assert.equal(record.state, 'failed');
    assert.equal(record.exitCode, 7);
    assert.equal(output, 'hello from wasm\n');
    assert.ok((record.peakMemoryBytes ?? 0) >= 65_536, 'linear memory size');
    assert.ok(record.startupMs !== null && record.startupMs >= 0);
    const again = await job({ image: mod('hello') });
    assert.equal(again.record.exitCode, 7, 'the cached module runs again');
  });

  test('an infinite loop is stopped at the timeout and reported timed out', async () => {
    const t0 = Date.now();
    const { record } = await job({ image: mod('spin'), timeout: '1s' });
    assert.equal(record.state, 'timeout');
    assert.equal(record.timedOut, true);
    assert.ok(Date.now() - t0 < 6000);
    const after = await job({ image: mod('hello') });
    assert.equal(after.record.exitCode, 7, 'the pool replaced the stopped thread');
  });

  test('allocating past --memory fails cleanly inside the module', async () => {
    const { record, output } = await job({ image: mod('alloc'), resources: { memory: '16Mi' } });
    assert.equal(record.exitCode, 3);
    assert.match(output, /allocation failed after 1[0-6] MiB/);
    assert.ok((record.peakMemoryBytes ?? 0) <= 16 * 2 ** 20);
  });

  test('the module sees only its workspace: no host paths', async () => {
    const ok = await job({ image: mod('checksum'), command: ['/workspace'] });
    assert.equal(ok.record.exitCode, 0, ok.output);
    const host = await job({ image: mod('checksum'), command: ['/etc'] });
    assert.equal(host.record.exitCode, 1);
    assert.match(host.output, /\/etc: /);
  });

  /** A module written in WAT, built with wabt's wat2wasm. */
  const wat = (name: string, text: string) => {
    const dir = box.paths.root;
    writeFileSync(path.join(dir, `${name}.wat`), text);
    execFileSync('wat2wasm', [path.join(dir, `${name}.wat`), '-o', path.join(dir, `${name}.wasm`)]);
    return path.join(dir, `${name}.wasm`);
  };

  test('a trap fails the job with the trap message; non-WASI imports are refused', async (t) => {
    t.diagnostic('modules written with wabt’s wat2wasm');
    const trap = await job({
      image: wat('trap', '(module (memory (export "memory") 1) (func (export "_start") unreachable))'),
    });
    assert.equal(trap.record.exitCode, 134);
    assert.match(trap.output, /wasm trap: RuntimeError: unreachable/);
    const oob = await job({
      image: wat(
        'oob',
        '(module (memory (export "memory") 1) (func (export "_start") i32.const 70000 i32.load drop))',
      ),
    });
    assert.equal(oob.record.exitCode, 134);
    assert.equal(oob.record.oomKilled, false, 'an out-of-bounds access is not the memory limit');
    assert.match(oob.output, /memory access out of bounds/);
    const foreign = await job({
      image: wat(
        'foreign',
        '(module (import "env" "system" (func $s (param i32))) (memory (export "memory") 1) (func (export "_start")))',
      ),
    });
    assert.equal(foreign.record.state, 'error');
    assert.match(foreign.record.error ?? '', /imports env\.system \(function\): only WASI preview1/);
  });

  type Step = ['mkdir', string] | ['symlink', string, string] | ['open', string, number];
  /**
   * A module doing WASI path calls in the workspace (fd 3), in order, the last an open that
   * follows symlinks: exits 0 if it opened, with its WASI errno if it did not, and 200 + the
   * step's index if an earlier step was refused.
   */
  const pathCalls = (name: string, steps: Step[]) => {
    let at = 0;
    const data: string[] = [];
    const str = (text: string) => {
      data.push(`(data (i32.const ${at}) "${text}")`);
      const ref = `(i32.const ${at}) (i32.const ${text.length})`;
      at += 256;
      return ref;
    };
    const calls = steps.map((step, i) => {
      const e =
        step[0] === 'mkdir'
          ? `(call $mkdir (i32.const 3) ${str(step[1])})`
          : step[0] === 'symlink'
            ? `(call $symlink ${str(step[1])} (i32.const 3) ${str(step[2])})`
            : `(call $open (i32.const 3) (i32.const 1) ${str(step[1])} (i32.const ${step[2]}) (i64.const 0x4002) (i64.const 0) (i32.const 0) (i32.const 8192))`;
      return i === steps.length - 1
        ? `(call $exit ${e})`
        : `(local.set $e ${e}) (if (local.get $e) (then (call $exit (i32.const ${200 + i}))))`;
    });
    return wat(
      name,
      `(module
  (import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink" (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  ${data.join('\n  ')}
  (func (export "_start") (local $e i32)
    ${calls.join('\n    ')}))`,
    );
  };

  test('a module starts with its checkout in /workspace, and what it leaves there is kept as artifacts', async () => {
    const repo = path.join(box.paths.root, 'wasm-repo');
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@t', ...args], {
        encoding: 'utf8',
      }).trim();
    execFileSync('git', ['init', '-q', repo]);
    writeFileSync(path.join(repo, 'a.txt'), 'checked out\n');
    git('add', '-A');
    git('commit', '-q', '-m', 'one');
    const checkout = { url: repo, commit: git('rev-parse', 'HEAD') };
    const seen = await job({ image: mod('checksum'), command: ['/workspace'], checkout });
    assert.equal(seen.record.exitCode, 0, seen.output);
    assert.match(seen.output, /a\.txt/, 'the checkout is in the module’s /workspace');
    const made = await job({
      image: pathCalls('mkdir-made', [
        ['mkdir', 'made'],
        ['open', 'made', 2],
      ]),
      checkout,
      artifacts: { paths: ['made/', 'a.txt'] },
    });
    assert.equal(made.record.state, 'succeeded', made.output + (made.record.error ?? ''));
    const kept = made.record.handle?.attributes.workspace?.artifacts;
    assert.ok(kept, 'artifacts were kept');
    const listed = execFileSync('tar', ['-tf', box.workspaces.artifacts.blobs.path(kept.digest)], {
      encoding: 'utf8',
    });
    assert.deepEqual(listed.trim().split('\n').sort(), ['a.txt', 'made/']);
    assert.deepEqual(readdirSync(box.paths.workspaces), [], 'the workspace is gone');
  });

  test('path_symlink to ".." cannot take an open out of the workspace; a link inside it is followed', async (t) => {
    const O_DIRECTORY = 2;
    const inside = await job({
      image: pathCalls('link-in', [
        ['mkdir', 'd'],
        ['symlink', 'd', 'link'],
        ['open', 'link', O_DIRECTORY],
      ]),
    });
    assert.equal(inside.record.exitCode, 0, `a link inside the workspace opens (${inside.output})`);
    const attacks: Record<string, Step[]> = {
      'link to ..': [
        ['symlink', '..', 'up'],
        ['open', 'up/etc/passwd', 0],
      ],
      'link to .. in a subdirectory, then a link through it and ..': [
        ['mkdir', 'd'],
        ['symlink', '..', 'd/up'],
        ['symlink', 'd/up/..', 'esc'],
        ['open', 'esc/etc/passwd', 0],
      ],
      'link to /': [
        ['symlink', '/', 'root'],
        ['open', 'root/etc/passwd', 0],
      ],
    };
    for (const [what, steps] of Object.entries(attacks)) {
      const { record } = await job({ image: pathCalls('link-out', steps) });
      t.diagnostic(`${what}: exit ${record.exitCode}`);
      assert.notEqual(record.exitCode, 0, `${what}: opened the host's /etc/passwd`);
      assert.ok(record.exitCode !== null && record.exitCode > 0, `${what}: ${record.state}`);
    }
  });

  test('a table cannot grow without bound: table.grow fails at the job’s share of its memory limit', async () => {
    // Grows a table of no maximum by 1024 elements until refused (or 100M); exits with the count / 1024.
    const grow = wat(
      'table-grow',
      `(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "_start") (local $n i32)
    (local.set $n (i32.const 1))
    (block $done (loop $l
      (br_if $done (i32.eq (table.grow $t (ref.null func) (i32.const 1024)) (i32.const -1)))
      (local.set $n (i32.add (local.get $n) (i32.const 1024)))
      (br_if $l (i32.lt_u (local.get $n) (i32.const 100000000)))))
    (call $exit (i32.shr_u (local.get $n) (i32.const 10)))))`,
    );
    const { record } = await job({ image: grow, resources: { memory: '16Mi' } });
    // 16 MiB / 256 bytes an element = 65,536 elements: 1 + 63 × 1024 fit, one more batch does not.
    assert.equal(record.exitCode, 63);
  });

  test('the module runs in a confined worker process: not root, its own cgroup and namespaces, seccomp, no network', async () => {
    const spin = wat(
      'spin-forever',
      '(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))',
    );
    const running = job({ image: spin, timeout: '20s', resources: { memory: '64Mi' } });
    const driver = box.runtimes.get('wasm');
    let pid: number | undefined;
    for (let i = 0; i < 200 && pid === undefined; i++) {
      const status = (await driver.status?.()) as { running: Array<{ pid: number }> };
      pid = status.running[0]?.pid;
      if (pid === undefined) await sleep(25);
    }
    try {
      assert.ok(pid !== undefined, 'a worker process runs the job');
      assert.deepEqual(workerConfinementProblems(pid), []);
      const limit = Number(
        readFileSync(`/sys/fs/cgroup/memory${processCgroup(pid)}/memory.limit_in_bytes`, 'utf8'),
      );
      assert.equal(limit, 64 * 2 ** 20 + WORKER_OVERHEAD_BYTES, 'the job’s memory and the worker’s overhead');
      // Its mount namespace: no Boxcar state, no host processes; the workspace a tmpfs of the job's size.
      const mounts = readFileSync(`/proc/${pid}/mounts`, 'utf8');
      assert.match(mounts, new RegExp(`^tmpfs ${box.paths.root} tmpfs ro,`, 'm'), mounts);
      assert.match(mounts, /^tmpfs \/proc tmpfs ro,/m);
      assert.match(mounts, /^tmpfs \/tmp tmpfs rw,.*size=262144k/m);
      const onDisk = existsSync(box.paths.sandboxes) ? readdirSync(box.paths.sandboxes) : [];
      assert.deepEqual(
        onDisk,
        [],
        'nothing of the sandbox on disk (no log, no record): it ends with this process',
      );
    } finally {
      await box.runtimes.get('wasm').stop(
        {
          sandboxId: ((await driver.status?.()) as { running: Array<{ sandboxId: string }> }).running[0]
            ?.sandboxId,
        } as never,
        'SIGKILL',
      );
      const { record } = await running;
      assert.equal(record.exitCode, 137);
    }
  });

  test('a job naming a path on the node (as an API client could) is refused: modules come from the store or a registry', async () => {
    const spec = JobSpec.parse({ runtime: 'wasm', image: mod('hello') });
    const id = randomUUID();
    const accepted = await box.store.createJob({
      id,
      tenant: 'api-client',
      spec,
      decision: await decideLocally(box, id, spec),
      origin: operatorOrigin(),
      owner: currentOwner(box.paths.root),
    });
    const { record } = await executeJob(box, accepted);
    assert.equal(record.state, 'error');
    assert.match(record.error ?? '', /never from a path on the node/);
    const local = await job({ image: mod('hello') }); // a local run imports the file first
    assert.equal(local.record.exitCode, 7);
    assert.match(local.record.spec.image ?? '', /^boxcar\/wasm\/hello-[0-9a-f]{12}\.wasm$/);
  });

  test('output past 16 MiB stops the job: the host keeps no more of it', async () => {
    // Writes the same 64 KiB (one iovec at 0, buffer at 16) to stdout for ever.
    const flood = wat(
      'flood',
      `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "\\10\\00\\00\\00\\00\\00\\01\\00")
  (func (export "_start") (loop $l (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br $l))))`,
    );
    let bytes = 0;
    let tail = '';
    const { record } = await box.runJob(
      { runtime: 'wasm', image: flood, timeout: '60s' },
      {
        onOutput: (c) => {
          bytes += Buffer.byteLength(c.text);
          tail = (tail + c.text).slice(-200);
        },
      },
    );
    assert.equal(record.exitCode, 137);
    assert.equal(record.timedOut, false);
    assert.match(tail, /\n\[boxcar: the job wrote more than 16 MiB of output: stopped\]\n$/);
    assert.ok(bytes < 16 * 2 ** 20 + 200, `${bytes} bytes kept`);
  });
});
