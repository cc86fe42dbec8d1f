import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { Capabilities, Fingerprint } from '../runtime.js';
import { ConmonDriver, type ConmonDriverOptions, type OciTool } from '../shared/conmon-driver.js';
import { ociRuntimeFingerprint } from '../shared/fingerprint.js';

/** Trusted jobs: runc containers (shared kernel, ~10–30 ms to start here). */
export class RuncDriver extends ConmonDriver {
  readonly name = 'runc' as const;
  readonly capabilities: Capabilities = {
    sharedKernel: true,
    workload: 'image',
    memoryMeasure: 'cgroup',
    memoryOverheadBytes: () => 0,
    gracefulStop: true,
    hostCgroup: true,
    network: true,
    survivesRestart: true,
    writableRoot: true,
    workspaceReturned: true,
  };
  private readonly binary: string;

  constructor(opts: ConmonDriverOptions & { runc?: string }) {
    super(opts);
    this.binary = opts.runc ?? '/usr/sbin/runc';
  }

  protected tool(): OciTool {
    return { binary: this.binary, globalArgs: ['--root', this.opts.paths.runcRoot] };
  }

  /**
   * A container whose first process has ended is state on disk and a cgroup (`destroy` removes
   * that): its PID namespace ended with its PID 1, so no process of it is left to kill. Its
   * state directory goes without a runc process, as runc's own delete removes it; any other
   * container goes through `runc delete --force`.
   */
  protected override async deleteContainer(sandboxId: string, exited: boolean): Promise<void> {
    if (exited) await rm(path.join(this.opts.paths.runcRoot, sandboxId), { recursive: true, force: true });
    else await super.deleteContainer(sandboxId, exited);
  }

  /** `runc start` without a runc process: the host's helper reads the exec FIFO (container-helper.c). */
  protected override async startCreated(sandboxId: string): Promise<void> {
    const fifo = path.join(this.opts.paths.runcRoot, sandboxId, 'exec.fifo');
    await this.helper.startContainer(fifo, await this.containerPid(sandboxId));
  }

  async fingerprint(): Promise<Fingerprint> {
    const fp = await ociRuntimeFingerprint(this.name, this.conmon, this.binary, 'runc');
    if (!fp.ok) return fp.fingerprint;
    return {
      runtime: this.name,
      usable: true,
      reason: `${fp.version} through conmon, cgroups ${fp.details.cgroups}`,
      details: fp.details,
    };
  }
}
