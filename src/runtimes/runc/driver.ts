import type { Fingerprint } from '../runtime.js';
import { ConmonDriver, type ConmonDriverOptions, type OciTool } from '../shared/conmon-driver.js';
import { containerHostProblems, toolVersion, unusable } from '../shared/fingerprint.js';

/** Trusted jobs: runc containers (shared kernel, ~10–30 ms to start here). */
export class RuncDriver extends ConmonDriver {
  readonly name = 'runc' as const;
  private readonly binary: string;

  constructor(opts: ConmonDriverOptions & { runc?: string }) {
    super(opts);
    this.binary = opts.runc ?? '/usr/sbin/runc';
  }

  protected tool(): OciTool {
    return { binary: this.binary, globalArgs: ['--root', this.opts.paths.runcRoot] };
  }

  async fingerprint(): Promise<Fingerprint> {
    const details: Record<string, string> = {};
    const problem = await containerHostProblems(this.conmon, details);
    if (problem) return unusable(this.name, problem, details);
    const version = await toolVersion(this.binary, ['--version']);
    if (!version.ok)
      return unusable(
        this.name,
        `runc cannot run (${version.why}); install the Debian package runc`,
        details,
      );
    details.runc = version.version;
    return {
      runtime: this.name,
      usable: true,
      reason: `${version.version} through conmon, cgroups ${details.cgroups}`,
      details,
    };
  }
}
