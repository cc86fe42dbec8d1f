import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { openBoxcar, type Boxcar, type BoxcarParts } from '../boxcar.js';
import { statePaths, type StatePaths } from '../lib/state-paths.js';
import { executeJob, type ExecuteOptions, type ExecuteResult } from '../runner/execute.js';
import { currentOwner } from '../lib/owner.js';
import { JobSpec } from '../jobs/spec.js';
import { silentLogger } from '../observability/logger.js';
import { decideLocally, operatorOrigin } from '../runner/local.js';
import { existingCgroupDirs } from '../runtimes/shared/cgroups.js';
import { claimsUnder } from '../runtimes/microvm/vmm-jail.js';
import { mountsUnder, unmount } from '../runtimes/shared/mounts.js';
import { run } from '../lib/exec.js';
import { parentPid } from '../lib/proc.js';
import { errnoCode } from '../lib/errors.js';
import { importLocalModule } from '../images/resolve.js';

/** A fresh state directory for one test file, removed (with anything it holds) afterwards. */
export async function tempState(prefix = 'bx-'): Promise<StatePaths & { cleanup: () => Promise<void> }> {
  const root = await mkdtemp(path.join(os.tmpdir(), prefix));
  const paths = statePaths(root);
  return {
    ...paths,
    cleanup: async () => {
      await forceCleanSandboxes(paths);
      await rm(root, { recursive: true, force: true });
    },
  };
}

/**
 * What a state directory still holds on the host: containers, mounts (a job's root overlay and
 * its tmpfs, a workspace, an image merged for a VM disk), sandbox folders, cgroups, processes.
 */
export async function leftovers(paths: StatePaths): Promise<string[]> {
  const found: string[] = [];
  if (existsSync(paths.runcRoot)) {
    const { stdout } = await run('runc', ['--root', paths.runcRoot, 'list', '-q']);
    for (const id of stdout.split('\n').filter(Boolean)) found.push(`runc container ${id}`);
  }
  // The runtime state's own tmpfs stays for the next start (runtime-state.ts); what is in it is not.
  for (const m of mountsUnder(paths.root).filter((m) => m.target !== paths.run))
    found.push(`${m.type} mount ${m.target}`);
  for (const dir of [paths.sandboxes, paths.containers].filter((d) => existsSync(d))) {
    for (const id of readdirSync(dir)) {
      found.push(`sandbox dir ${id}`);
      for (const d of existingCgroupDirs(`/boxcar/${id}`)) found.push(`cgroup ${d}`);
    }
  }
  for (const p of processesUsing(paths.root)) found.push(`process ${p.pid} ${p.command}`);
  found.push(...(await claimsUnder(paths.root)));
  return found;
}

/** Monitors and VMMs (conmon, QEMU) whose command line names a path in `root`. */
function processesUsing(root: string): Array<{ pid: number; command: string }> {
  const found = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ESRCH') continue;
      throw err;
    }
    const args = cmdline.split('\0');
    if (!args.some((a) => a.includes(`${root}/`)) || ownHelper(pid, args[0] ?? '')) continue;
    found.push({ pid, command: args.slice(0, 1).join(' ') });
  }
  return found;
}

/**
 * The container helper of a Boxcar open in this process: it serves that Boxcar's jobs until
 * the Boxcar closes (and is left over if it outlives it, no longer this process's child).
 */
function ownHelper(pid: number, command: string): boolean {
  if (!path.basename(command).startsWith('container-helper-')) return false;
  const parent = parentPid(pid);
  return parent === undefined || parent === process.pid; // gone meanwhile: not left over either
}

/** Last-resort cleanup when a test failed half-way: every container and mount of this state dir. */
async function forceCleanSandboxes(paths: StatePaths): Promise<void> {
  if (existsSync(paths.runcRoot)) {
    const { stdout } = await run('runc', ['--root', paths.runcRoot, 'list', '-q']);
    for (const id of stdout.split('\n').filter(Boolean))
      await run('runc', ['--root', paths.runcRoot, 'delete', '--force', id]);
  }
  for (const p of processesUsing(paths.root)) process.kill(p.pid, 'SIGKILL');
  for (const m of mountsUnder(paths.root).reverse()) await unmount(m.target);
}

/** The config of a test Boxcar that is given none; tests with a config of their own add it. */
export const TEST_CONFIG = 'microvm:\n  allow_tcg_for_untrusted: true';

/** A whole local Boxcar over a temporary state directory, with a `run` helper for one job. */
export async function testBoxcar(opts: { config?: string } & BoxcarParts = {}): Promise<
  Boxcar & {
    cleanup: () => Promise<void>;
    runJob: (input: Record<string, unknown>, opts?: ExecuteOptions) => Promise<ExecuteResult>;
  }
> {
  const state = await tempState();
  let config = opts.config;
  if (!config) {
    // This project's own tests run untrusted jobs in microVMs on TCG hosts too (the opt-in).
    config = path.join(state.root, 'config.yaml');
    await writeFile(config, `${TEST_CONFIG}\n`);
  }
  const box = await openBoxcar({ state: state.root, config }, silentLogger(), opts);
  return {
    ...box,
    runJob: async (input, opts = {}) => {
      const spec = await importLocalModule(box.images, JobSpec.parse(input));
      const id = randomUUID();
      const decision = await decideLocally(box, id, spec);
      const job = await box.store.createJob({
        id,
        tenant: 'test',
        spec,
        decision,
        origin: operatorOrigin(),
        owner: currentOwner(box.paths.root),
      });
      return executeJob(box, job, opts);
    },
    cleanup: async () => {
      await box.close();
      await state.cleanup();
    },
  };
}
