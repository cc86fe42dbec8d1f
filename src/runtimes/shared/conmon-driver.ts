import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { openSync, closeSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile, access } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { StatePaths } from '../../lib/state-paths.js';
import type { RuntimeName } from '../../jobs/spec.js';
import type { Logger } from '../../observability/logger.js';
import type {
  Capabilities,
  ExitStatus,
  Fingerprint,
  OutputOptions,
  Recovered,
  Runtime,
  SandboxRequest,
  StopSignal,
  TaskStats,
} from '../runtime.js';
import { driverState } from '../runtime.js';
import type { OutputChunk } from '../../lib/follow.js';
import { newHandle, type TaskHandle } from '../../jobs/handle.js';
import { readCgroupStats, removeCgroup } from './cgroups.js';
import { ExecError, run, scrubbedEnv } from '../../lib/exec.js';
import { processAlive, pss } from '../../lib/proc.js';
import { followFile, k8sFileDecoder } from '../../lib/follow.js';
import { leaseFor, recordedSlot, recordSlotIn, releaseRecordedNetwork, setupNetwork } from './network.js';
import { ociSpec } from './oci-spec.js';
import { jobLauncher, prepareJobRoot, unmountJobRoot, type JobRootMount } from './job-root.js';
import { imageLayers } from '../../images/image.js';
import { ChangeWatcher } from '../../lib/watch.js';
import { ifExists, errorMessage } from '../../lib/errors.js';
import { currentOwner } from '../../lib/owner.js';
import { recordSandbox, forgetSandbox } from '../sandbox-ledger.js';
import { setContainerLimits } from './cgroups.js';
import { capabilityMask } from './oci-spec.js';
import { ContainerHelper } from './container-helper.js';
import {
  ContainerPool,
  jobMessage,
  poolInit,
  poolInitArgs,
  poolShape,
  POOL_INIT_IN_ROOT,
  POOL_INIT_PATH,
  POOL_WRAPPER,
  type PoolEntry,
  type PoolMember,
  type PoolTemplate,
} from './container-pool.js';

export interface OciTool {
  /** The OCI runtime binary conmon runs. */
  binary: string;
  /** Global flags before the subcommand (`--root DIR`, runsc's `--platform`…). */
  globalArgs: string[];
  /** A command every call of the tool runs under (e.g. nsenter into the job's network namespace). */
  wrapper?: string[];
}

export interface ToolOptions {
  /** The job's network namespace, when it has network. */
  netnsPath?: string;
}

export interface ConmonDriverOptions {
  paths: StatePaths;
  logger: Logger;
  conmon?: string;
  /** Size cap of each job's log file; conmon truncates past it. */
  logSizeMax?: number;
  /** Idle containers kept ready per pool key (config `warm_pools`); 0: none. */
  warmPool?: number;
}

/** What a pooled container takes of a job's OCI config (oci-spec.ts) when the job takes it over. */
type JobConfig = {
  process: { args: string[]; env: string[]; cwd: string };
  hostname: string;
  linux: {
    resources: {
      memory: { limit: number };
      cpu: { quota: number; period: number; shares: number };
      pids: { limit: number };
    };
  };
};

/** What a container's handle keeps for its driver: the monitor that holds it. */
const ConmonState = z.object({
  conmonPid: z.number().int().positive(),
  /** A warm pool's container: its first process waits on its FIFO for the job's command. */
  pooled: z.boolean().optional(),
});
type ConmonState = z.output<typeof ConmonState>;

const CREATE_TIMEOUT_MS = 60_000;
const DEFAULT_LOG_SIZE_MAX = 16 * 1024 * 1024;

/**
 * A sandbox's files, all under its directory. Paths are made when asked for: a running job
 * holds this for its whole life (its wait and its log), and a thousand jobs holding thirteen
 * joined paths each held ~8 MiB of string pieces.
 */
class SandboxFiles {
  constructor(
    readonly dir: string,
    private readonly id: string,
  ) {}
  get config() {
    return `${this.dir}/config.json`;
  }
  get exitDir() {
    return `${this.dir}/exit`;
  }
  get exitFile() {
    return `${this.dir}/exit/${this.id}`;
  }
  get persistDir() {
    return `${this.dir}/persist`;
  }
  get oomFile() {
    return `${this.dir}/persist/oom`;
  }
  get pidFile() {
    return `${this.dir}/pidfile`;
  }
  get conmonPidFile() {
    return `${this.dir}/conmon.pid`;
  }
  get conmonLog() {
    return `${this.dir}/conmon.log`;
  }
  get ociLog() {
    return `${this.dir}/oci-log`;
  }
  /** The job's network slot, written before the network exists (see setupNetwork). */
  get networkFile() {
    return `${this.dir}/network.json`;
  }
  /** A pooled container's command FIFO. */
  get channel() {
    return `${this.dir}/channel`;
  }
  /** The job's message for a pooled container until it is sent. */
  get command() {
    return `${this.dir}/command`;
  }
}

/**
 * An OCI runtime (runc, runsc) driven through conmon, the per-job monitor podman and CRI-O
 * use: one ~2 MB process per job holds the container's stdio, writes its log and its exit
 * code to files, and outlives us, so a restarted Boxcar finds every job where it left it.
 * Everything is derived from the sandbox id, so `destroy` and `recover` work from a handle
 * saved before the sandbox existed.
 */
export abstract class ConmonDriver implements Runtime {
  abstract readonly name: RuntimeName;
  abstract readonly capabilities: Capabilities;
  protected readonly conmon: string;
  private readonly pool: ContainerPool;
  /** Sandboxes whose pool key is topped up once their job has started (not beside its start). */
  private readonly refillAfterStart = new Map<string, string>();
  /** Does on the host, in one long-lived process, what would cost a process per job. */
  protected readonly helper: ContainerHelper;
  /** How a pooled container's init starts and gets its job (see PoolEntry). */
  protected readonly poolEntry: PoolEntry = 'fd';

  constructor(protected readonly opts: ConmonDriverOptions) {
    this.conmon = opts.conmon ?? 'conmon';
    this.helper = new ContainerHelper(path.join(opts.paths.root, 'bin'));
    this.pool = new ContainerPool(
      opts.warmPool ?? 0,
      (template) => this.createMember(template),
      (member) => this.disposeMember(member),
      opts.logger,
    );
  }

  abstract fingerprint(): Promise<Fingerprint>;
  protected abstract tool(opts?: ToolOptions): OciTool;

  protected files(sandboxId: string): SandboxFiles {
    return new SandboxFiles(path.join(this.opts.paths.containers, sandboxId), sandboxId);
  }

  protected cgroupsPath(sandboxId: string): string {
    return `/boxcar/${sandboxId}`;
  }

  /** Runtime-specific tweaks to the OCI config (runsc annotations, …). */
  protected adjustSpec(spec: Record<string, unknown>): Record<string, unknown> {
    return spec;
  }

  /** The pool key's part of a job's OCI config (container-pool.ts `poolShape`). */
  protected poolShape(spec: Record<string, unknown>): Record<string, unknown> {
    return poolShape(spec);
  }

  async prepare(req: SandboxRequest): Promise<TaskHandle> {
    if (this.pool.enabled) {
      // The job's own config, less what only its own sandbox has (root, cgroup): its pool key,
      // and all a pooled container needs of it.
      const spec = this.adjustSpec(
        ociSpec({
          jobId: req.jobId,
          spec: req.spec,
          image: req.image,
          rootPath: '',
          cgroupsPath: '',
          secrets: req.secrets,
          workspaceDir: req.workspaceDir,
        }),
      ) as JobConfig;
      const key = this.pool.keyOf(req, this.poolShape(spec));
      if (key !== undefined) {
        const member = this.pool.take(key);
        this.refillAfterStart.set(member?.id ?? req.sandboxId, key);
        if (member) return this.adopt(member, req, spec);
      }
    }
    const f = this.files(req.sandboxId);
    await mkdir(f.exitDir, { recursive: true });
    await mkdir(f.persistDir, { recursive: true }); // conmon dies at exit if this is missing
    await mkdir(path.dirname(req.logPath), { recursive: true });
    const root = await prepareJobRoot(f.dir, imageLayers(req.image), req.spec.limits.rootfsBytes);
    const network = req.spec.network.enabled
      ? await setupNetwork(req.sandboxId, req.spec.network, recordSlotIn(f.networkFile), this.opts.logger)
      : undefined;
    const spec = this.adjustSpec(
      ociSpec({
        jobId: req.jobId,
        spec: req.spec,
        image: req.image,
        rootPath: root.root,
        secrets: req.secrets,
        cgroupsPath: this.cgroupsPath(req.sandboxId),
        netnsPath: network?.netnsPath,
        workspaceDir: req.workspaceDir,
      }),
    );
    // It holds the job's environment, secrets included: only root may read it, and it is gone
    // once the job has started (runsc reads it again at `start`) or its sandbox is destroyed.
    await writeFile(f.config, JSON.stringify(spec), { mode: 0o600 });
    const conmonPid = await this.createWithConmon(req.sandboxId, req.jobId, req.logPath, f, root, {
      netnsPath: network?.netnsPath,
    });
    return {
      ...newHandle({ runtime: this.name, jobId: req.jobId, sandboxId: req.sandboxId, logPath: req.logPath }),
      driverState: { conmonPid } satisfies ConmonState,
      attributes: { hostPid: conmonPid },
    };
  }

  /**
   * Starts the container's monitor in a mount namespace of its own, where the job's root is
   * mounted: the host's mount table never grows with running jobs (every new container copies
   * the table of the namespace it comes from, so a host holding two mounts per job made each
   * start slower the more jobs ran), and the root goes with the namespace when the monitor and
   * the container have ended.
   */
  private async createWithConmon(
    id: string,
    jobId: string,
    logPath: string,
    f: SandboxFiles,
    root: JobRootMount,
    toolOpts: ToolOptions,
    pooled?: { init: string },
  ): Promise<number> {
    const tool = this.tool(toolOpts);
    const entry = pooled && this.poolEntry;
    // conmon runs `<runtime> <runtime args…> create …`: a wrapper becomes the runtime, the tool its first argument.
    const [runtime, ...toolArgs] =
      pooled && entry === 'fd'
        ? ['/bin/sh', '-c', POOL_WRAPPER, 'boxcar-pool', pooled.init, f.channel, ...commandLine(tool)]
        : commandLine(tool);
    const runtimeArgs = [...toolArgs, '--log-format=json', '--log', f.ociLog].flatMap((a) => [
      '--runtime-arg',
      a,
    ]);
    const args = [
      '--api-version', '1',
      '-c', id, '-u', id, '-n', `boxcar-${jobId}`,
      '-r', runtime,
      '-b', f.dir,
      '-p', f.pidFile,
      '--conmon-pidfile', f.conmonPidFile,
      '--exit-dir', f.exitDir,
      '--persist-dir', f.persistDir,
      '-l', `k8s-file:${logPath}`,
      '--log-size-max', String(this.opts.logSizeMax ?? DEFAULT_LOG_SIZE_MAX),
      '--log-level', 'warning',
      '--socket-dir-path', f.dir,
      '--full-attach',
      // The pooled init's job comes on stdin, through the attach socket (<bundle>/attach).
      ...(entry === 'stdin' ? ['--stdin'] : []),
      ...runtimeArgs,
    ]; // prettier-ignore
    // A pooled init that cannot be passed as an fd is copied into the root (its writable
    // layer); one that can waits on a FIFO, made with the root.
    const [copyFrom, copyTo] =
      pooled && entry === 'stdin' ? [pooled.init, path.join(root.root, POOL_INIT_IN_ROOT)] : ['', ''];
    const fifo = pooled && entry === 'fd' ? f.channel : '';
    const launcher = await jobLauncher(path.join(this.opts.paths.root, 'bin'));
    const out = openSync(f.conmonLog, 'a');
    try {
      // detached: its own session, so a Ctrl-C to our process group does not reach the monitor.
      const child = spawn(launcher, [...root.args, f.dir, copyFrom, copyTo, fifo, this.conmon, ...args], {
        cwd: f.dir,
        detached: true,
        stdio: ['ignore', out, out, 'pipe'],
        env: scrubbedEnv({ _OCI_SYNCPIPE: '3' }),
      });
      const sync = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
      const pid = await new Promise<number>((resolve, reject) => {
        let text = '';
        const timer = setTimeout(
          () => fail(new Error(`conmon did not report the container within ${CREATE_TIMEOUT_MS} ms`)),
          CREATE_TIMEOUT_MS,
        );
        const fail = (err: Error) => {
          clearTimeout(timer);
          sync.destroy();
          reject(err);
        };
        child.on('error', (err) => fail(new Error(`cannot start conmon (${this.conmon}): ${err.message}`)));
        sync.on('data', (d: Buffer) => {
          text += d.toString();
          const nl = text.indexOf('\n');
          if (nl < 0) return;
          clearTimeout(timer);
          sync.destroy(); // conmon only writes to it again for exec sessions, which we do not use
          const msg = JSON.parse(text.slice(0, nl)) as { data: number; message?: string };
          if (msg.data > 0) resolve(msg.data);
          else reject(new Error(firstLines(msg.message ?? `conmon reported ${msg.data}`)));
        });
        sync.on('end', () => {
          if (!text.includes('\n')) fail(new Error('conmon exited before reporting the container'));
        });
      });
      child.unref();
      this.opts.logger.debug({ sandboxId: id, containerPid: pid }, 'container created');
      return Number((await readFile(f.conmonPidFile, 'utf8')).trim());
    } catch (err) {
      throw new Error(
        `${this.name}: creating the container failed: ${errorMessage(err)}${await this.ociErrors(f)}${await this.monitorErrors(f)}`,
        { cause: err },
      );
    } finally {
      closeSync(out);
    }
  }

  /** What the monitor's process wrote before it failed (a mount of the job's root that failed). */
  private async monitorErrors(f: SandboxFiles): Promise<string> {
    const text = ((await ifExists(readFile(f.conmonLog, 'utf8'))) ?? '').trim();
    return text ? ` (${firstLines(text)})` : '';
  }

  /** The OCI runtime's own error lines, which say why a create failed. */
  private async ociErrors(f: SandboxFiles): Promise<string> {
    const lines = ((await ifExists(readFile(f.ociLog, 'utf8'))) ?? '').trim().split('\n').filter(Boolean);
    const msgs = lines.map((l) => {
      try {
        return (JSON.parse(l) as { msg?: string }).msg ?? l;
      } catch {
        return l; // not JSON: keep the raw line
      }
    });
    return msgs.length ? ` (${firstLines(msgs.slice(-3).join('\n'))})` : '';
  }

  /** The tool as this sandbox needs it (inside its network namespace, when it has one). */
  private async toolFor(sandboxId: string): Promise<OciTool> {
    const slot = await recordedSlot(this.files(sandboxId).networkFile);
    return this.tool({ netnsPath: slot === undefined ? undefined : leaseFor(slot).netnsPath });
  }

  /** Runs the OCI runtime on a sandbox; a container it does not know is a `ContainerNotFound`. */
  protected async ociRun(sandboxId: string, args: string[], timeoutMs = 30_000) {
    const [cmd, ...pre] = commandLine(await this.toolFor(sandboxId));
    try {
      return await run(cmd, [...pre, ...args], { timeoutMs });
    } catch (err) {
      // runc says "container does not exist"; runsc "container not found" or "... does not exist".
      if (err instanceof ExecError && /does not exist|not found/i.test(err.stderr))
        throw new ContainerNotFound(sandboxId, err);
      throw err;
    }
  }

  /** Starts a created container's process (`<runtime> start`). */
  protected async startCreated(sandboxId: string): Promise<void> {
    await this.ociRun(sandboxId, ['start', sandboxId]);
  }

  /**
   * Removes the runtime's container (`<runtime> delete --force`); `exited`: its first process has
   * ended (conmon recorded its exit). The cgroup is removed after, by `destroy`.
   */
  protected async deleteContainer(sandboxId: string, exited: boolean): Promise<void> {
    void exited; // runsc's sandbox and gofer outlive the container's process: always its delete
    try {
      await this.ociRun(sandboxId, ['delete', '--force', sandboxId]);
    } catch (err) {
      if (!(err instanceof ContainerNotFound)) throw err;
    }
  }

  /** The container's first process on the host, as the runtime wrote it at create. */
  protected async containerPid(sandboxId: string): Promise<number> {
    return Number((await readFile(this.files(sandboxId).pidFile, 'utf8')).trim());
  }

  async start(handle: TaskHandle): Promise<void> {
    const f = this.files(handle.sandboxId);
    if (driverState(handle, ConmonState)?.pooled) {
      // The init has waited on its channel since the pool made it: the job's message is its start.
      if (this.poolEntry === 'fd') await writeFile(f.channel, await readFile(f.command));
      else await this.helper.send(path.join(f.dir, 'attach'), f.command);
      await rm(f.command, { force: true });
    } else {
      await this.startCreated(handle.sandboxId);
      await rm(f.config, { force: true });
    }
    const key = this.refillAfterStart.get(handle.sandboxId);
    if (key !== undefined) {
      this.refillAfterStart.delete(handle.sandboxId);
      this.pool.refill(key);
    }
  }

  /**
   * An idle container for the pool: root, namespaces, cgroup and seccomp made as for a job of
   * the template's shape, started, its init waiting for a job. Recorded as this process's, so a
   * restart after a crash destroys it (sandbox-cleanup.ts).
   */
  private async createMember(template: PoolTemplate): Promise<PoolMember> {
    const id = randomUUID();
    const logPath = path.join(this.opts.paths.sandboxes, `${id}.log`);
    const handle = newHandle({ runtime: this.name, jobId: 'warm-pool', sandboxId: id, logPath });
    // Its programs first (built once per host): a take-over then waits for no compiler.
    const init = await poolInit(path.join(this.opts.paths.root, 'bin'));
    await this.helper.prepare();
    await recordSandbox(this.opts.paths, handle, currentOwner(this.opts.paths.root));
    try {
      const f = this.files(id);
      await mkdir(f.exitDir, { recursive: true });
      await mkdir(f.persistDir, { recursive: true });
      const root = await prepareJobRoot(f.dir, imageLayers(template.image), template.spec.limits.rootfsBytes);
      const spec = this.adjustSpec(
        ociSpec({
          jobId: id,
          spec: template.spec,
          image: template.image,
          rootPath: root.root,
          cgroupsPath: this.cgroupsPath(id),
        }),
      ) as MemberSpec;
      spec.process.args = poolInitArgs(this.poolEntry);
      spec.process.env = [];
      const dropCapabilities = this.poolEntry === 'stdin' ? grantInitsOwnWork(spec) : '0';
      await writeFile(f.config, JSON.stringify(spec), { mode: 0o600 });
      const conmonPid = await this.createWithConmon(id, 'warm-pool', logPath, f, root, {}, { init });
      await this.startCreated(id);
      await rm(f.config, { force: true });
      const containerPid = await this.containerPid(id);
      return { id, logPath, conmonPid, containerPid, dropCapabilities };
    } catch (err) {
      await this.destroy(handle).catch((e: unknown) =>
        this.opts.logger.warn(
          { err: e, sandboxId: id },
          'could not remove a pooled container whose creation failed',
        ),
      );
      await forgetSandbox(this.opts.paths, id);
      throw err;
    }
  }

  private async disposeMember(member: PoolMember): Promise<void> {
    await this.destroy(this.memberHandle(member, 'warm-pool'));
    await forgetSandbox(this.opts.paths, member.id);
  }

  private memberHandle(member: PoolMember, jobId: string): TaskHandle {
    return {
      ...newHandle({ runtime: this.name, jobId, sandboxId: member.id, logPath: member.logPath }),
      driverState: { conmonPid: member.conmonPid, pooled: true } satisfies ConmonState,
      attributes: { hostPid: member.conmonPid, fromWarmPool: true },
    };
  }

  /**
   * A job takes over an idle container: its limits and hostname are set as its own config
   * would have set them, and its command, environment (secrets included) and working
   * directory wait in a root-only file for `start`, which sends them down the FIFO. The handle
   * names the pooled container: the sandbox the request named is never made.
   */
  private async adopt(member: PoolMember, req: SandboxRequest, spec: JobConfig): Promise<TaskHandle> {
    const f = this.files(member.id);
    const r = spec.linux.resources;
    const handle = this.memberHandle(member, req.jobId);
    // The job's own from here on: a crash before its handle is stored leaves no holder, and
    // the next start-up removes the container.
    await recordSandbox(this.opts.paths, handle);
    try {
      await setContainerLimits(this.cgroupsPath(member.id), {
        memoryBytes: r.memory.limit,
        pids: r.pids.limit,
        cpuQuotaUs: r.cpu.quota,
        cpuPeriodUs: r.cpu.period,
        cpuShares: r.cpu.shares,
      });
      // runc's init may not set it (no CAP_SYS_ADMIN): the host does, from outside. gVisor's
      // sandbox has a kernel of its own, where only its init can.
      const initSetsHostname = this.poolEntry === 'stdin';
      if (!initSetsHostname) await this.helper.setHostname(member.containerPid, spec.hostname);
      const message = jobMessage({
        hostname: initSetsHostname ? spec.hostname : '',
        dropCapabilities: member.dropCapabilities,
        cwd: spec.process.cwd,
        args: spec.process.args,
        env: spec.process.env,
      });
      await writeFile(f.command, message, { mode: 0o600 });
    } catch (err) {
      // The caller holds the handle of the sandbox it asked for, not this one: it goes here.
      await this.disposeMember(member).catch((e: unknown) =>
        this.opts.logger.warn(
          { err: e, sandboxId: member.id },
          'could not remove a pooled container a job failed to take over',
        ),
      );
      throw new Error(`${this.name}: taking over a pooled container failed: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    return handle;
  }

  private async readExit(f: SandboxFiles): Promise<number | undefined> {
    const text = (await ifExists(readFile(f.exitFile, 'utf8')))?.trim();
    return text ? Number(text) : undefined;
  }

  private async oomKilled(handle: TaskHandle, f: SandboxFiles): Promise<boolean> {
    if (await exists(f.oomFile)) return true;
    return (await readCgroupStats(this.cgroupsPath(handle.sandboxId))).oomKills > 0;
  }

  private async conmonPid(handle: TaskHandle, f: SandboxFiles): Promise<number | undefined> {
    const fromHandle = driverState(handle, ConmonState)?.conmonPid;
    if (fromHandle !== undefined) return fromHandle;
    const text = await ifExists(readFile(f.conmonPidFile, 'utf8'));
    return text === undefined ? undefined : Number(text.trim());
  }

  async wait(handle: TaskHandle): Promise<ExitStatus> {
    const f = this.files(handle.sandboxId);
    const changes = new ChangeWatcher(f.exitDir);
    try {
      for (;;) {
        const code = await this.readExit(f);
        if (code !== undefined) return { exitCode: code, oomKilled: await this.oomKilled(handle, f) };
        const pid = await this.conmonPid(handle, f);
        if (pid === undefined || !processAlive(pid)) {
          const late = await this.readExit(f);
          if (late !== undefined) return { exitCode: late, oomKilled: await this.oomKilled(handle, f) };
          throw new Error(
            `${this.name}: the job's monitor (conmon pid ${pid ?? '?'}) ended without recording an exit code`,
          );
        }
        await changes.wait(1000);
      }
    } finally {
      changes.close();
    }
  }

  async stop(handle: TaskHandle, signal: StopSignal): Promise<void> {
    try {
      await this.ociRun(handle.sandboxId, ['kill', handle.sandboxId, signal.replace(/^SIG/, '')]);
    } catch (err) {
      // Already stopped or gone: the stop has happened.
      if (err instanceof ContainerNotFound) return;
      if (err instanceof ExecError && /not running|process already finished/i.test(err.stderr)) return;
      throw err;
    }
  }

  async stats(handle: TaskHandle): Promise<TaskStats> {
    const s = await readCgroupStats(this.cgroupsPath(handle.sandboxId));
    return {
      memoryBytes: s.memoryBytes,
      peakMemoryBytes: s.peakMemoryBytes,
      cpuUsageNs: s.cpuUsageNs,
      pids: s.pids,
    };
  }

  async destroy(handle: TaskHandle): Promise<void> {
    const f = this.files(handle.sandboxId);
    this.refillAfterStart.delete(handle.sandboxId);
    try {
      await this.deleteContainer(handle.sandboxId, (await this.readExit(f)) !== undefined);
      const pid = await this.conmonPid(handle, f);
      if (pid !== undefined && processAlive(pid)) {
        // conmon exits by itself once the container is gone; give it a moment, then make sure.
        for (let i = 0; i < 20 && processAlive(pid); i++) await new Promise((r) => setTimeout(r, 10));
        if (processAlive(pid)) process.kill(pid, 'SIGKILL');
      }
      await releaseRecordedNetwork(f.networkFile);
      const left = await removeCgroup(this.cgroupsPath(handle.sandboxId));
      if (left.length)
        this.opts.logger.warn(
          { sandboxId: handle.sandboxId, left },
          'cgroup directories could not be removed',
        );
    } finally {
      // Whatever failed above, the job's root, the bundle and the sandbox's log do not outlive
      // it; the root is unmounted first, so the removal never walks into it.
      await unmountJobRoot(f.dir);
      await rm(f.dir, { recursive: true, force: true });
      await rm(handle.logPath, { force: true });
    }
  }

  async recover(handle: TaskHandle): Promise<Recovered> {
    const f = this.files(handle.sandboxId);
    const code = await this.readExit(f);
    if (code !== undefined)
      return { state: 'exited', exit: { exitCode: code, oomKilled: await this.oomKilled(handle, f) } };
    const pid = await this.conmonPid(handle, f);
    if (pid !== undefined && processAlive(pid) && driverState(handle, ConmonState)?.pooled) {
      // A pooled container runs from the pool's start; its job has not begun while the init waits.
      if (await this.initWaits(f)) return { state: 'created' };
    }
    if (pid !== undefined && processAlive(pid)) {
      const { stdout } = await this.ociRun(handle.sandboxId, ['state', handle.sandboxId]);
      const status = (JSON.parse(stdout) as { status?: string }).status;
      return { state: status === 'created' ? 'created' : 'running' };
    }
    return {
      state: 'gone',
      reason: `no exit code recorded and its monitor (conmon pid ${pid ?? '?'}) is not running`,
    };
  }

  /**
   * Whether a pooled container's init still waits for its job. runc's is seen from the host;
   * gVisor's is inside the sandbox's own kernel, so its message not yet sent says it (sent twice
   * after a crash between sending and removing it, the second goes nowhere: conmon closed the
   * job's stdin after the first).
   */
  private async initWaits(f: SandboxFiles): Promise<boolean> {
    if (this.poolEntry === 'stdin') return exists(f.command);
    const initPid = (await ifExists(readFile(f.pidFile, 'utf8')))?.trim();
    const cmdline = initPid ? await ifExists(readFile(`/proc/${initPid}/cmdline`, 'utf8')) : undefined;
    return cmdline?.startsWith(`${POOL_INIT_PATH}\0`) ?? false;
  }

  /** The warm pool: each idle container's memory (its cgroup and its monitor's share). */
  async status(): Promise<Record<string, unknown>> {
    const idle = await Promise.all(
      this.pool.entries().map(async ({ key, member }) => {
        const cgroupBytes = (await readCgroupStats(this.cgroupsPath(member.id))).memoryBytes;
        // Its share of the pages it shares with other monitors (PSS), not all it maps (RSS).
        const monitorPssBytes = pss(member.conmonPid) ?? 0;
        return {
          key,
          sandboxId: member.id,
          memoryBytes: cgroupBytes + monitorPssBytes,
          cgroupBytes,
          monitorPssBytes,
        };
      }),
    );
    return { warmPool: { size: this.pool.size, filling: this.pool.filling(), idle } };
  }

  async close(): Promise<void> {
    await this.pool.close();
    await this.helper.close();
  }

  output(handle: TaskHandle, opts: OutputOptions): AsyncIterable<OutputChunk> {
    const f = this.files(handle.sandboxId);
    return followFile(handle.logPath, k8sFileDecoder, {
      follow: opts.follow,
      signal: opts.signal,
      ended: opts.ended,
      isDone: async () => (await this.readExit(f)) !== undefined || !(await exists(f.dir)),
    });
  }
}

/** What a pooled container's OCI config has that the pool changes. */
type MemberSpec = {
  process: { args: string[]; env: string[]; capabilities: Record<CapabilitySet, string[]> };
  linux: { seccomp: { syscalls: Array<{ names: string[]; action: string }> } };
};
type CapabilitySet = 'bounding' | 'effective' | 'permitted' | 'inheritable' | 'ambient';

/** What the init needs to set the job's hostname itself: CAP_SYS_ADMIN, and CAP_SETPCAP to drop it. */
const INIT_CAPABILITIES = ['CAP_SYS_ADMIN', 'CAP_SETPCAP'];

/**
 * Grants a pooled init (`stdin` entry) what setting the job's hostname takes, beyond the job's
 * own capabilities: the capabilities, and `sethostname` past seccomp (the job, without
 * CAP_SYS_ADMIN, gets EPERM from it as it would from seccomp). Returns the mask of what the
 * init drops before the job's exec.
 */
function grantInitsOwnWork(spec: MemberSpec): string {
  const caps = spec.process.capabilities;
  const added = INIT_CAPABILITIES.filter((c) => !caps.bounding.includes(c));
  for (const set of ['bounding', 'effective', 'permitted'] as const) caps[set] = [...caps[set], ...added];
  spec.linux.seccomp.syscalls.push({ names: ['sethostname'], action: 'SCMP_ACT_ALLOW' });
  return capabilityMask(added).toString(16);
}

/** The OCI runtime has no container of this id (never created, or already deleted). */
export class ContainerNotFound extends Error {
  constructor(sandboxId: string, cause: ExecError) {
    super(`no container ${sandboxId}: ${cause.message}`, { cause });
    this.name = 'ContainerNotFound';
  }
}

/** How the tool is run: under its wrapper, if any, with its global flags before the subcommand. */
function commandLine(tool: OciTool): [string, ...string[]] {
  const [cmd, ...rest] = [...(tool.wrapper ?? []), tool.binary, ...tool.globalArgs];
  return [cmd as string, ...rest];
}

/** A runtime's error can be a whole usage text: keep what says what went wrong. */
function firstLines(text: string, max = 3): string {
  const lines = text.trim().split('\n').filter(Boolean);
  return lines.length > max ? `${lines.slice(0, max).join(' | ')} …` : lines.join(' | ');
}

async function exists(p: string): Promise<boolean> {
  return (await ifExists(access(p).then(() => true))) ?? false;
}
