import { readFileSync } from 'node:fs';
import { confinementProblems } from '../shared/confinement.js';

/**
 * What is wrong with a WASM worker process's confinement (see `confinementProblems`): its
 * cgroup is a `wasm-` one, its mount, network, IPC and UTS namespaces are its own, and its
 * network has only loopback. For tests and verify-isolation.
 */
export function workerConfinementProblems(pid: number): string[] {
  const problems = confinementProblems(pid, {
    cgroupPrefix: '/boxcar/wasm-',
    namespaces: ['mnt', 'net', 'ipc', 'uts'],
  });
  const ifaces = readFileSync(`/proc/${pid}/net/dev`, 'utf8')
    .split('\n')
    .slice(2)
    .map((l) => l.trim().split(':')[0])
    .filter((name) => name && name !== 'lo');
  if (ifaces.length) problems.push(`has network interfaces ${ifaces.join(', ')}`);
  return problems;
}
