/**
 * What the guest agent is asked to run: the job's command, environment and limits, the
 * container jobs' capabilities and seccomp filter (compiled to BPF once), a fresh clock and
 * entropy. It holds the job's secrets, so it lives in memory only.
 */

import { randomBytes } from 'node:crypto';
import type { JobLimits } from '../../jobs/spec.js';
import type { NetworkLease } from '../shared/network.js';
import { capabilityMask, jobEnv, jobHostname } from '../shared/oci-spec.js';
import { seccompProfile } from '../shared/seccomp.js';
import { compileSeccomp } from '../shared/seccomp-bpf.js';
import type { SandboxRequest } from '../runtime.js';
import type { RunRequest } from './protocol.js';

const GUEST_CAPABILITIES = capabilityMask();
let seccompProgram: Buffer | undefined;
const guestSeccomp = () => (seccompProgram ??= compileSeccomp(seccompProfile()));

export function runRequest(
  hostname: string,
  limits: JobLimits,
  argv: string[],
  env: string[],
  network: string,
  outputCapBytes: number,
  workspaceDisk = false,
): RunRequest {
  return {
    hostname,
    nowMs: Date.now(),
    seed: randomBytes(64),
    outputCapBytes,
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
    workspaceDisk,
  };
}

/** The run request for a job, with its network address when it has one. */
export function jobRunRequest(
  req: SandboxRequest,
  lease: NetworkLease | undefined,
  outputCapBytes: number,
): RunRequest {
  const env = jobEnv({
    jobId: req.jobId,
    spec: req.spec,
    image: req.image,
    secrets: req.secrets,
  });
  return runRequest(
    jobHostname(req.spec.name, req.jobId),
    req.spec.limits,
    req.spec.command,
    env,
    lease ? `${lease.jobIp}/30 ${lease.hostIp}` : '',
    outputCapBytes,
    req.workspaceDir !== undefined,
  );
}
