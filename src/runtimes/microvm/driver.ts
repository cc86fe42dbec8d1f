import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { link, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { StatePaths } from '../../config/paths.js';
import { JobSpec, type JobLimits, type JobNetwork } from '../../jobs/spec.js';
import type { Logger } from '../../observability/logger.js';
import type {
  ExitStatus,
  Fingerprint,
  OutputChunk,
  OutputOptions,
  Recovered,
  Runtime,
  SandboxRequest,
  StopSignal,
  TaskHandle,
  TaskStats,
} from '../runtime.js';
import { processAlive, sleep } from '../shared/exec.js';
import { toolVersion, type ToolVersion } from '../shared/fingerprint.js';
import { followFile } from '../shared/follow.js';
import { capabilityMask, jobEnv, jobHostname } from '../shared/oci-spec.js';
import { seccompProfile } from '../shared/seccomp.js';
import { compileSeccomp } from '../shared/seccomp-bpf.js';
import { AgentChannel } from './agent-channel.js';
import { createJobDisk, imageDisk } from './disk.js';
import { ensureGuest, GuestMissing, type GuestImage } from './guest/guest.js';
import { encodeRunRequest, vmLogDecoder, type GuestExit, type RunRequest } from './protocol.js';
import { chooseAccel, type AccelChoice } from './qemu/accel.js';
import { QEMU, QemuVmm, RestoreFailed, vmDiagnostics } from './qemu/vmm.js';
import { Snapshots } from './snapshots.js';
import { VmPool } from './pool.js';
import { digestHex } from '../../images/digest.js';
import type { ResolvedImage } from '../../images/image.js';
import { ImageStore } from '../../images/image-store.js';
import { resolveImage } from '../../images/resolve.js';
import { AGENT_VSOCK_PORT, FIRECRACKER, FirecrackerVmm, vsockPath } from './firecracker/vmm.js';
import { vmFiles, type Vmm, type VmFiles, type VmLaunch, type VmNetwork, type VmShape } from './vmm.js';
import {
  bridgeForVm,
  recordSlotIn,
  releaseRecordedNetwork,
  setupNetwork,
  teardownNetwork,
  VM_TAP,
  type NetworkLease,
} from '../shared/network.js';

/**
 * Untrusted jobs in microVMs (the seed's `firecracker` runtime): each job gets its own guest
 * kernel, restored from a snapshot of a booted guest (or booted cold), with its image as a
 * copy-on-write disk. The VMM process outlives Boxcar and the job's output and exit are frames
 * the VMM appends to the job's log, so a restarted Boxcar finds every job where it left it.
 */
export interface MicrovmDriverOptions {
  paths: StatePaths;
  logger: Logger;
  /** Size cap of each job's log: the agent stops forwarding output past it. */
  logSizeMax?: number;
  /** Idle VMs kept ready per VM shape and image (config `microvm.warm_pool`). */
  warmPool?: number;
}

/** A restored, warmed, ballooned VM waiting for a job in its own directory. */
interface PooledVm {
  id: string;
  launch: VmLaunch;
  pid: number;
  channel: AgentChannel;
}

/** Guest memory beyond the job's limit: the guest kernel, page cache of its disk, the agent. */
export const GUEST_OVERHEAD_MIB = 96;
/** What an idle pooled VM keeps of its memory: the balloon takes the rest until a job comes. */
const POOL_IDLE_GUEST_MIB = GUEST_OVERHEAD_MIB + 32;
/** Every guest NIC has this address: each sits alone on its job's bridge. */
const VM_MAC = '02:bc:00:00:00:01';
const DEFAULT_NETWORK = JobSpec.parse({ command: ['true'], network: true }).network;
const DEFAULT_LIMITS = JobSpec.parse({ command: ['true'] }).limits;
/** What every guest job keeps: the container jobs' capabilities and seccomp filter (as BPF, built once). */
const GUEST_CAPABILITIES = capabilityMask();
let seccompProgram: Buffer | undefined;
const guestSeccomp = () => (seccompProgram ??= compileSeccomp(seccompProfile()));
const BOOT_TIMEOUT_MS = 30_000;
const START_TIMEOUT_MS = 30_000;
const DEFAULT_LOG_SIZE_MAX = 16 * 1024 * 1024;

export interface VmInfo {
  vmm: string;
  accel: string;
  restoredFromSnapshot: boolean;
  /** Restore or boot time; for a VM from the warm pool, the time to take it over. */
  bootMs: number;
  fromWarmPool?: boolean;
}

interface Setup {
  vmm: Vmm;
  guest: GuestImage;
  accel: AccelChoice;
}

export function vmShape(limits: JobLimits): VmShape {
  return {
    memoryMiB: Math.ceil(limits.memoryBytes / 2 ** 20) + GUEST_OVERHEAD_MIB,
    vcpus: Math.max(1, Math.ceil(limits.cpuMillis / 1000)),
  };
}

export class MicrovmDriver implements Runtime {
  readonly name = 'firecracker' as const;
  private setup: Promise<Setup> | undefined;
  private toolVersions: Promise<{ qemu: ToolVersion; fc: ToolVersion }> | undefined;
  private readonly channels = new Map<string, AgentChannel>();
  private readonly requests = new Map<string, RunRequest>();
  private readonly footprints = new Map<string, Footprint>();
  /** Pool keys to top up once these sandboxes' jobs have started. */
  private readonly refillAfterStart = new Map<string, string>();
  /** Pooled VMs whose balloon is let out once their job has started. */
  private readonly deflateAfterStart = new Map<string, VmLaunch>();
  private readonly snapshots: Snapshots;
  private readonly pool: VmPool<PooledVm>;
  /** What each pool key stands for: the VM shape and the image its disk holds. */
  private readonly poolKeys = new Map<string, { shape: VmShape; image: ResolvedImage }>();
  private readonly images: ImageStore;

  constructor(private readonly opts: MicrovmDriverOptions) {
    this.snapshots = new Snapshots(path.join(opts.paths.vm, 'snapshots'), opts.logger);
    this.images = new ImageStore(opts.paths);
    this.pool = new VmPool(
      opts.warmPool ?? 0,
      (key) => this.poolVm(key),
      (vm) => this.disposePooled(vm),
      opts.logger,
    );
  }

  files(sandboxId: string, logPath: string): VmFiles {
    return vmFiles(path.join(this.opts.paths.sandboxes, sandboxId), logPath);
  }

  /** The job's network slot, written before the network exists (see setupNetwork). */
  private networkFile(sandboxId: string): string {
    return path.join(this.opts.paths.sandboxes, sandboxId, 'network.json');
  }

  /** The job's own namespace, veth and egress rules as a container gets, bridged to a tap. */
  private async network(
    id: string,
    spec: JobNetwork,
    slotFile: string,
  ): Promise<{ vm: VmNetwork; lease: NetworkLease }> {
    const lease = await setupNetwork(id, spec, recordSlotIn(slotFile));
    await bridgeForVm(lease);
    return { lease, vm: { tap: VM_TAP, mac: VM_MAC, netnsPath: lease.netnsPath, rate: spec.egress } };
  }

  /** The VMMs' versions (or why they cannot run), asked once per process. */
  private tools(): Promise<{ qemu: ToolVersion; fc: ToolVersion }> {
    this.toolVersions ??= Promise.all([
      toolVersion(QEMU, ['--version']),
      toolVersion(FIRECRACKER, ['--version']),
    ]).then(([qemu, fc]) => ({ qemu, fc }));
    return this.toolVersions;
  }

  /** Guest kernel and initramfs, accelerator and VMM: worked out once per process. */
  private ready(): Promise<Setup> {
    this.setup ??= (async () => {
      const guest = await ensureGuest(this.opts.paths.vm);
      const { qemu, fc } = await this.tools();
      const accel = await chooseAccel(`${guest.key}:${qemu.ok ? qemu.version : ''}`, () =>
        this.kvmBoots(guest),
      );
      // Firecracker where it is installed and KVM runs guests; QEMU everywhere else.
      const vmm: Vmm = fc.ok && accel.accel === 'kvm' ? new FirecrackerVmm() : new QemuVmm(accel.accel);
      return { guest, accel, vmm };
    })();
    this.setup.catch(() => (this.setup = undefined)); // a failure is not cached
    return this.setup;
  }

  /** Boots the guest once under KVM: `/dev/kvm` opening is not proof that guests run. */
  private async kvmBoots(guest: GuestImage): Promise<boolean> {
    const files = vmFiles(path.join(this.opts.paths.sandboxes, `kvm-probe-${process.pid}`));
    await mkdir(files.dir, { recursive: true });
    let pid: number | undefined;
    try {
      await createJobDisk('qcow2', files.disk);
      const vmm = new QemuVmm('kvm');
      pid = await vmm.boot({ shape: { memoryMiB: 256, vcpus: 1 }, files, guest });
      const channel = await connectAgent(vmm, files);
      try {
        await channel.hello(5000);
        return true;
      } finally {
        channel.close();
      }
    } catch (err) {
      this.opts.logger.info({ err }, 'KVM probe: the guest did not boot under KVM');
      return false;
    } finally {
      if (pid !== undefined) await killVmm(pid);
      await rm(files.dir, { recursive: true, force: true });
    }
  }

  async fingerprint(): Promise<Fingerprint> {
    const details: Record<string, string> = {};
    const unusable = (reason: string): Fingerprint => ({
      runtime: this.name,
      usable: false,
      reason,
      details,
    });
    if (process.getuid?.() !== 0) return unusable('needs root (VM disks, taps, cgroups); run boxcar as root');
    const { qemu, fc } = await this.tools();
    if (!qemu.ok)
      return unusable(`QEMU cannot run (${qemu.why}); install the Debian package qemu-system-x86`);
    details.qemu = qemu.version;
    const img = await toolVersion('qemu-img', ['--version']);
    if (!img.ok) return unusable(`qemu-img cannot run (${img.why}); install the Debian package qemu-utils`);
    details.firecracker = fc.ok ? fc.version : 'not installed';
    try {
      const { guest, accel, vmm } = await this.ready();
      details.vmm = vmm.name;
      details.accel = accel.accel;
      details.accelReason = accel.why;
      details.guestKernel = guest.release;
      const fcNote = fc.ok
        ? accel.accel === 'kvm'
          ? ''
          : '; Firecracker is installed but needs KVM'
        : '; Firecracker not installed';
      return {
        runtime: this.name,
        usable: true,
        reason: `QEMU microvm (${qemu.version.replace(/^QEMU emulator version /, '')}), ${accel.accel}: ${accel.why}; guest ${guest.release}${fcNote}`,
        details,
      };
    } catch (err) {
      if (err instanceof GuestMissing) return unusable(err.message);
      return unusable(`preparing the guest failed: ${(err as Error).message}`);
    }
  }

  async prepare(req: SandboxRequest): Promise<TaskHandle> {
    const f = this.files(req.sandboxId, req.logPath);
    await mkdir(path.dirname(req.logPath), { recursive: true });
    const { vmm, guest } = await this.ready();
    const shape = vmShape(req.spec.limits);
    const pooled = this.takePooled(req, shape);
    if (pooled) return this.adopt(pooled, req, vmm); // its directory becomes the sandbox
    await mkdir(f.dir, { recursive: true });
    await createJobDisk(vmm.diskFormat, f.disk, await imageDisk(this.opts.paths.vm, req.image));
    const net = req.spec.network.enabled
      ? await this.network(req.sandboxId, req.spec.network, this.networkFile(req.sandboxId))
      : undefined;
    const launch: VmLaunch = { shape, files: f, guest, network: net?.vm };
    const t0 = Date.now();
    const vm = req.spec.coldBoot ? undefined : await this.restore(vmm, launch);
    const { pid, channel } = vm ?? (await this.coldBoot(vmm, launch));
    this.channels.set(req.sandboxId, channel);
    this.requests.set(req.sandboxId, this.request(req, net?.lease));
    const info: VmInfo = {
      vmm: vmm.name,
      accel: vmm.accel,
      restoredFromSnapshot: vm !== undefined,
      bootMs: Date.now() - t0,
    };
    return {
      runtime: this.name,
      jobId: req.jobId,
      sandboxId: req.sandboxId,
      logPath: req.logPath,
      state: { pid, vm: info },
    };
  }

  private poolKey(shape: VmShape, image: ResolvedImage): string {
    const key = `m${shape.memoryMiB}-c${shape.vcpus}-${digestHex(image.digest).slice(0, 16)}`;
    this.poolKeys.set(key, { shape, image });
    return key;
  }

  /** A pooled VM for this job, if one waits: a restore-from-snapshot job without network. */
  private takePooled(req: SandboxRequest, shape: VmShape): PooledVm | undefined {
    if (!this.pool.enabled || req.spec.coldBoot || req.spec.network.enabled) return undefined;
    const key = this.poolKey(shape, req.image);
    this.refillAfterStart.set(req.sandboxId, key);
    return this.pool.take(key);
  }

  /**
   * Takes over a pooled VM: its directory becomes the job's sandbox (the sockets move with it),
   * its output file becomes the sandbox's log (a hard link), and the balloon gives the guest
   * its memory back.
   */
  private async adopt(vm: PooledVm, req: SandboxRequest, vmm: Vmm): Promise<TaskHandle> {
    const t0 = Date.now();
    const f = this.files(req.sandboxId, req.logPath);
    await rename(vm.launch.files.dir, f.dir);
    await link(path.join(f.dir, 'out'), req.logPath);
    // The guest gets its memory back once the job runs: deflating now would slow its start.
    this.deflateAfterStart.set(req.sandboxId, { ...vm.launch, files: f });
    this.channels.set(req.sandboxId, vm.channel);
    this.requests.set(req.sandboxId, this.request(req, undefined));
    const info: VmInfo = {
      vmm: vmm.name,
      accel: vmm.accel,
      restoredFromSnapshot: true,
      bootMs: Date.now() - t0,
      fromWarmPool: true,
    };
    return {
      runtime: this.name,
      jobId: req.jobId,
      sandboxId: req.sandboxId,
      logPath: req.logPath,
      state: { pid: vm.pid, vm: info },
    };
  }

  /** Restores a VM for the pool, runs a job's start in it short of the exec, and balloons it down. */
  private async poolVm(key: string): Promise<PooledVm> {
    const what = this.poolKeys.get(key);
    if (!what) throw new Error(`unknown VM pool key ${key}`);
    const { vmm, guest } = await this.ready();
    const id = `pool-${process.pid}-${randomUUID()}`;
    const files = vmFiles(path.join(this.opts.paths.sandboxes, id));
    const dir = files.dir;
    await mkdir(dir, { recursive: true });
    try {
      await createJobDisk(vmm.diskFormat, files.disk, await imageDisk(this.opts.paths.vm, what.image));
      const launch: VmLaunch = { shape: what.shape, files, guest };
      const vm = await this.restore(vmm, launch);
      if (!vm) throw new Error('the snapshot did not restore');
      const vmRef: PooledVm = { id, launch, ...vm };
      try {
        const limits = {
          ...DEFAULT_LIMITS,
          memoryBytes: (what.shape.memoryMiB - GUEST_OVERHEAD_MIB) * 2 ** 20,
        };
        await vm.channel.warm(
          encodeRunRequest(this.runRequest('warm', limits, [], [], '')),
          START_TIMEOUT_MS,
        );
        await vmm.setBalloon(launch, POOL_IDLE_GUEST_MIB);
        // Idle means settled: a balloon still inflating would compete with the next job's start.
        const target = (POOL_IDLE_GUEST_MIB + 8) * 2 ** 20;
        for (let i = 0; i < 75 && (await vmm.balloonStats(launch)).actualBytes > target; i++)
          await sleep(200);
      } catch (err) {
        await this.disposePooled(vmRef);
        throw err;
      }
      return vmRef;
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  private async disposePooled(vm: PooledVm): Promise<void> {
    vm.channel.close();
    await killVmm(vm.pid);
    await rm(vm.launch.files.dir, { recursive: true, force: true });
  }

  /** Pooled VMs of Boxcar processes that died: their VMMs and directories. */
  private async sweepPool(): Promise<void> {
    const dirs = existsSync(this.opts.paths.sandboxes) ? await readdir(this.opts.paths.sandboxes) : [];
    for (const name of dirs) {
      const owner = /^pool-(\d+)-/.exec(name)?.[1];
      if (!owner || Number(owner) === process.pid || processAlive(Number(owner))) continue;
      const f = vmFiles(path.join(this.opts.paths.sandboxes, name));
      const pid = pidFromFile(f.pidFile);
      if (pid !== undefined) await killVmm(pid);
      await rm(f.dir, { recursive: true, force: true });
    }
  }

  /**
   * Before a job is accepted: the guest, the accelerator and the default shape's snapshot are
   * ready, and with a warm pool configured, idle VMs of the base image too.
   */
  async warm(): Promise<void> {
    const { vmm, guest } = await this.ready();
    await this.sweepPool();
    const shape = vmShape(DEFAULT_LIMITS);
    await this.snapshotFor(vmm, guest, shape, false);
    if (this.pool.enabled)
      await this.pool.fill(this.poolKey(shape, await resolveImage(this.images, undefined)));
  }

  private async coldBoot(vmm: Vmm, launch: VmLaunch): Promise<{ pid: number; channel: AgentChannel }> {
    const pid = await vmm.boot(launch);
    const channel = await connectAgent(vmm, launch.files);
    try {
      await channel.hello(BOOT_TIMEOUT_MS);
    } catch (err) {
      channel.close();
      throw new Error(`${(err as Error).message}${await vmDiagnostics(launch.files)}`, { cause: err });
    }
    return { pid, channel };
  }

  /** From the snapshot of this VM shape (built first if needed); undefined if it would not restore. */
  private async restore(
    vmm: Vmm,
    launch: VmLaunch,
  ): Promise<{ pid: number; channel: AgentChannel } | undefined> {
    const snapshot = await this.snapshotFor(vmm, launch.guest, launch.shape, launch.network !== undefined);
    let channel: AgentChannel | undefined;
    try {
      const pid = await vmm.restore(launch, snapshot, async () => {
        channel = await connectAgent(vmm, launch.files);
      });
      if (!channel) throw new Error('restored without a channel to the agent');
      return { pid, channel };
    } catch (err) {
      channel?.close();
      if (!(err instanceof RestoreFailed)) throw err;
      // Damaged, or from a VMM that reads it differently: this job boots cold, the next rebuilds it.
      await this.snapshots.discard(snapshot, err.message);
      await cleanVmFiles(launch.files);
      return undefined;
    }
  }

  /** The snapshot directory of this VM shape, built first when missing or unusable. */
  private snapshotFor(vmm: Vmm, guest: GuestImage, shape: VmShape, network: boolean): Promise<string> {
    return this.snapshots.ensure({ guest, vmm, shape, network }, (dir) =>
      this.takeSnapshot(vmm, guest, shape, network, dir),
    );
  }

  /** Boots a VM of this shape on an empty disk and saves it at the agent's hello. */
  private async takeSnapshot(
    vmm: Vmm,
    guest: GuestImage,
    shape: VmShape,
    network: boolean,
    dir: string,
  ): Promise<void> {
    const files = vmFiles(dir);
    await createJobDisk(vmm.diskFormat, files.disk);
    // A VM with a NIC is snapshotted with one: it needs a tap of its own while it boots.
    const net = network
      ? await this.network(path.basename(dir), DEFAULT_NETWORK, path.join(dir, 'network.json'))
      : undefined;
    try {
      const launch: VmLaunch = { shape, guest, files, network: net?.vm };
      const { pid, channel } = await this.coldBoot(vmm, launch);
      try {
        await vmm.snapshot(launch, dir); // the channel stays connected: restored guests see a host there
      } finally {
        channel.close();
        await killVmm(pid);
      }
    } finally {
      if (net) await teardownNetwork(net.lease);
      await cleanVmFiles(files);
      await rm(files.disk, { force: true });
    }
  }

  /** The agent's run request; it holds the job's secrets, so it is kept in memory only. */
  private request(req: SandboxRequest, lease: NetworkLease | undefined): RunRequest {
    const env = jobEnv({
      jobId: req.jobId,
      spec: req.spec,
      image: req.image,
      secrets: req.secrets,
      cgroupsPath: '',
    });
    return this.runRequest(
      jobHostname(req.spec.name, req.jobId),
      req.spec.limits,
      req.spec.command,
      env,
      lease ? `${lease.jobIp}/30 ${lease.hostIp}` : '',
    );
  }

  private runRequest(
    hostname: string,
    limits: JobLimits,
    argv: string[],
    env: string[],
    network: string,
  ): RunRequest {
    return {
      hostname,
      nowMs: Date.now(),
      seed: randomBytes(64),
      outputCapBytes: this.opts.logSizeMax ?? DEFAULT_LOG_SIZE_MAX,
      pids: limits.pids,
      memoryBytes: limits.memoryBytes,
      cpuMillis: limits.cpuMillis,
      tmpBytes: limits.tmpBytes,
      workspaceBytes: limits.workspaceBytes,
      capabilities: GUEST_CAPABILITIES,
      seccomp: guestSeccomp(),
      argv,
      env,
      network,
    };
  }

  private async channel(handle: TaskHandle): Promise<AgentChannel> {
    let ch = this.channels.get(handle.sandboxId);
    if (!ch) {
      const { vmm } = await this.ready();
      ch = await connectAgent(vmm, this.files(handle.sandboxId, handle.logPath), 2000);
      this.channels.set(handle.sandboxId, ch);
    }
    return ch;
  }

  async start(handle: TaskHandle): Promise<void> {
    const request = this.requests.get(handle.sandboxId);
    if (!request) throw new Error(`microvm: no run request for sandbox ${handle.sandboxId} in this process`);
    this.requests.delete(handle.sandboxId);
    const f = this.files(handle.sandboxId, handle.logPath);
    await writeFile(path.join(f.dir, 'started'), '');
    // The clock is set as the job starts: a restored guest wakes at its snapshot's time.
    try {
      const channel = await this.channel(handle);
      await channel.run(encodeRunRequest({ ...request, nowMs: Date.now() }), START_TIMEOUT_MS);
    } finally {
      const key = this.refillAfterStart.get(handle.sandboxId);
      this.refillAfterStart.delete(handle.sandboxId);
      if (key) this.pool.refill(key);
      const pooled = this.deflateAfterStart.get(handle.sandboxId);
      this.deflateAfterStart.delete(handle.sandboxId);
      // Until this lands, deflate-on-oom gives the guest memory back page by page if it needs it.
      if (pooled)
        (await this.ready()).vmm
          .setBalloon(pooled, pooled.shape.memoryMiB)
          .catch((err: unknown) =>
            this.opts.logger.warn({ err }, 'giving a pooled VM its memory back failed'),
          );
    }
  }

  private vmmPid(handle: TaskHandle): number | undefined {
    const pid = handle.state.pid;
    if (typeof pid === 'number') return pid;
    // A handle saved before prepare returned: QEMU's pid file says where it is.
    return pidFromFile(this.files(handle.sandboxId, handle.logPath).pidFile);
  }

  private vmAlive(handle: TaskHandle): boolean {
    const pid = this.vmmPid(handle);
    return pid !== undefined && processAlive(pid);
  }

  /** The exit frame in the job's log, reading it from the start (or following it with `follow`). */
  private async guestExit(handle: TaskHandle, follow: boolean): Promise<GuestExit | undefined> {
    let exit: GuestExit | undefined;
    const decoder = vmLogDecoder((e) => (exit = e));
    const watching = followFile(handle.logPath, () => decoder, {
      follow,
      isDone: async () => exit !== undefined || !this.vmAlive(handle),
    });
    for await (const chunk of watching) void chunk; // only the exit matters here
    return exit;
  }

  async wait(handle: TaskHandle): Promise<ExitStatus> {
    // Under Firecracker the output comes through our channel: a re-attached job needs one.
    if ((await this.ready()).vmm.name === 'firecracker' && this.vmAlive(handle)) await this.channel(handle);
    const exit = await this.guestExit(handle, true);
    if (exit) {
      // The job's own figures inside the guest, beside the VMM's that the record keeps.
      this.opts.logger.info(
        { jobId: handle.jobId, guestPeakMemoryBytes: exit.peakMemoryBytes, guestCpuNs: exit.cpuUsageNs },
        'the guest reported the job’s exit',
      );
      return { exitCode: exit.exitCode, oomKilled: exit.oomKilled };
    }
    if (existsSync(path.join(this.files(handle.sandboxId, handle.logPath).dir, 'killed')))
      return { exitCode: 128 + 9, oomKilled: false };
    throw new Error(
      `the VM ended without reporting the job's exit${await vmDiagnostics(this.files(handle.sandboxId, handle.logPath))}`,
    );
  }

  async stop(handle: TaskHandle, signal: StopSignal): Promise<void> {
    if (!this.vmAlive(handle)) return;
    if (signal === 'SIGTERM') {
      (await this.channel(handle)).signal(15);
      return;
    }
    // KILL ends the whole VM: nothing of the job can outlive it.
    await writeFile(path.join(this.files(handle.sandboxId, handle.logPath).dir, 'killed'), '');
    const pid = this.vmmPid(handle);
    if (pid !== undefined) await killVmm(pid);
  }

  /** The VMM process's footprint on the host: what the VM really costs. */
  async stats(handle: TaskHandle): Promise<TaskStats> {
    const pid = this.vmmPid(handle);
    const proc = pid === undefined ? undefined : await processFootprint(pid);
    const last = this.footprints.get(handle.sandboxId);
    const now = proc ?? last ?? { rssBytes: 0, peakRssBytes: 0, cpuNs: 0 };
    if (proc) this.footprints.set(handle.sandboxId, proc);
    return {
      memoryBytes: now.rssBytes,
      peakMemoryBytes: now.peakRssBytes,
      cpuUsageNs: now.cpuNs,
      pids: proc ? 1 : 0,
    };
  }

  async destroy(handle: TaskHandle): Promise<void> {
    const f = this.files(handle.sandboxId, handle.logPath);
    this.channels.get(handle.sandboxId)?.close();
    this.channels.delete(handle.sandboxId);
    this.requests.delete(handle.sandboxId);
    this.footprints.delete(handle.sandboxId);
    this.refillAfterStart.delete(handle.sandboxId);
    this.deflateAfterStart.delete(handle.sandboxId);
    const pid = this.vmmPid(handle);
    if (pid !== undefined) await killVmm(pid);
    await releaseRecordedNetwork(this.networkFile(handle.sandboxId));
    await rm(f.dir, { recursive: true, force: true });
    await rm(handle.logPath, { force: true });
  }

  async recover(handle: TaskHandle): Promise<Recovered> {
    const exit = await this.guestExit(handle, false);
    if (exit) return { state: 'exited', exit: { exitCode: exit.exitCode, oomKilled: exit.oomKilled } };
    if (!this.vmAlive(handle)) return { state: 'gone', reason: 'its VM is not running and reported no exit' };
    if (!existsSync(path.join(this.files(handle.sandboxId, handle.logPath).dir, 'started')))
      // The run request (with the job's secrets) lived only in the process that died.
      return { state: 'gone', reason: 'its VM was ready but the job was never sent to it' };
    return { state: 'running' };
  }

  output(handle: TaskHandle, opts: OutputOptions): AsyncIterable<OutputChunk> {
    let ended = false;
    const dir = this.files(handle.sandboxId, handle.logPath).dir;
    return followFile(handle.logPath, () => vmLogDecoder(() => (ended = true)), {
      follow: opts.follow,
      signal: opts.signal,
      ended: opts.ended,
      isDone: async () => ended || !this.vmAlive(handle) || !existsSync(dir),
    });
  }

  /** The warm pool: each idle VM's host memory and what its balloon holds back. */
  async status(): Promise<Record<string, unknown>> {
    const entries = this.pool.entries();
    const vmm = entries.length ? (await this.ready()).vmm : undefined; // no VM yet: nothing to ask
    const idle = await Promise.all(
      entries.map(async ({ key, vm }) => ({
        key,
        pid: vm.pid,
        guestMiB: vm.launch.shape.memoryMiB,
        rssBytes: (await processFootprint(vm.pid))?.rssBytes ?? 0,
        balloon: await vmm?.balloonStats(vm.launch),
      })),
    );
    return { warmPool: { size: this.opts.warmPool ?? 0, idle } };
  }

  async close(): Promise<void> {
    await this.pool.close();
    for (const ch of this.channels.values()) ch.close();
    this.channels.clear();
  }
}

/** The agent's control channel: a virtio-serial socket under QEMU, vsock under Firecracker. */
function connectAgent(vmm: Vmm, files: VmFiles, timeoutMs?: number): Promise<AgentChannel> {
  return vmm.name === 'firecracker'
    ? AgentChannel.connect(vsockPath(files), { timeoutMs, vsockPort: AGENT_VSOCK_PORT, outFile: files.out })
    : AgentChannel.connect(files.ctl, { timeoutMs });
}

/** The pid a VMM wrote to its pid file, if it got that far. */
function pidFromFile(file: string): number | undefined {
  try {
    return Number(readFileSync(file, 'utf8').trim()) || undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function killVmm(pid: number): Promise<void> {
  if (!processAlive(pid)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
  for (let i = 0; i < 200 && processAlive(pid); i++) await sleep(10);
}

/** The sockets and pid file a VM left, so the next VM in the same directory starts clean. */
async function cleanVmFiles(f: VmFiles): Promise<void> {
  for (const file of [f.api, f.ctl, f.pidFile]) await rm(file, { force: true });
}

interface Footprint {
  rssBytes: number;
  peakRssBytes: number;
  cpuNs: number;
}

async function processFootprint(pid: number): Promise<Footprint | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime + stime
    return { rssBytes: kb('VmRSS'), peakRssBytes: kb('VmHWM'), cpuNs: (ticks * 1e9) / CLOCK_TICKS };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

const CLOCK_TICKS = 100;
