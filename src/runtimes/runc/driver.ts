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
