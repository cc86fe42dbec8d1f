import { existsSync } from 'node:fs';
import type { RuntimeName } from '../../jobs/spec.js';
import type { Fingerprint } from '../runtime.js';
import { cgroupMode } from './cgroups.js';
import { run } from '../../lib/exec.js';
import { errorMessage } from '../../lib/errors.js';

/** Checks every container runtime shares: root, conmon, a memory cgroup controller. */
export async function containerHostProblems(
  conmon: string,
  details: Record<string, string>,
): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'needs root (containers, cgroups and namespaces); run boxcar as root';
  const mode = cgroupMode();
  details.cgroups = mode;
  if (mode === 'v1' && !existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes')) {
    return 'the memory cgroup controller is not mounted at /sys/fs/cgroup/memory';
  }
  const version = await toolVersion(conmon, ['--version']);
  if (!version.ok) return `conmon cannot run (${version.why}); install the Debian package conmon`;
  details.conmon = version.version;
  return undefined;
}

export type ToolVersion = { ok: true; version: string } | { ok: false; why: string };

/** First line of a tool's version output, or why the tool cannot be run (a fingerprint answer, not an error). */
export async function toolVersion(binary: string, args: string[]): Promise<ToolVersion> {
  try {
    const { stdout } = await run(binary, args, { timeoutMs: 5000 });
    return { ok: true, version: stdout.split('\n')[0]?.trim() ?? '' };
  } catch (err) {
    return { ok: false, why: errorMessage(err) };
  }
}

export function unusable(runtime: RuntimeName, reason: string, details: Record<string, string>): Fingerprint {
  return { runtime, usable: false, reason, details };
}

/**
 * The steps every conmon-driven OCI runtime's fingerprint shares: the host checks, then the
 * runtime binary's version (recorded in `details` under `tool`).
 */
export async function ociRuntimeFingerprint(
  runtime: RuntimeName,
  conmon: string,
  binary: string,
  tool: string,
): Promise<
  { ok: true; version: string; details: Record<string, string> } | { ok: false; fingerprint: Fingerprint }
> {
  const details: Record<string, string> = {};
  const problem = await containerHostProblems(conmon, details);
  if (problem) return { ok: false, fingerprint: unusable(runtime, problem, details) };
  const version = await toolVersion(binary, ['--version']);
  if (!version.ok) {
    return {
      ok: false,
      fingerprint: unusable(
        runtime,
        `${tool} cannot run (${version.why}); install the Debian package ${tool}`,
        details,
      ),
    };
  }
  details[tool] = version.version;
  return { ok: true, version: version.version, details };
}
