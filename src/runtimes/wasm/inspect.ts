import { readFileSync, readlinkSync } from 'node:fs';

/**
 * What is wrong with a WASM worker process's confinement, read from the host's /proc: empty
 * when it is another process than this one, runs as a user other than root with no
 * capabilities, no_new_privs and a seccomp filter, in a cgroup of its own (not this process's),
 * and in mount, network, IPC and UTS namespaces of its own whose network has only loopback.
 * For tests and verify-isolation.
 */
export function workerConfinementProblems(pid: number): string[] {
  const problems: string[] = [];
  if (pid === process.pid) problems.push('the module runs in the boxcar process itself');
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) =>
    new RegExp(`^${name}:\\s+(.*)$`, 'm').exec(status)?.[1]?.trim().split(/\s+/) ?? [];
  if ([...field('Uid'), ...field('Gid')].some((id) => id === '0'))
    problems.push(`runs as root (Uid ${field('Uid')[0]})`);
  if (!/^0+$/.test(field('CapEff')[0] ?? '')) problems.push(`has capabilities ${field('CapEff')[0]}`);
  if (field('NoNewPrivs')[0] !== '1') problems.push('may gain privileges (no_new_privs unset)');
  if (field('Seccomp')[0] !== '2') problems.push('has no seccomp filter');
  const cgroup = workerCgroup(pid);
  if (!cgroup?.startsWith('/boxcar/wasm-') || cgroup === workerCgroup('self'))
    problems.push(`is not in a cgroup of its own (${cgroup})`);
  for (const ns of ['mnt', 'net', 'ipc', 'uts'])
    if (readlinkSync(`/proc/${pid}/ns/${ns}`) === readlinkSync('/proc/self/ns/' + ns))
      problems.push(`shares boxcar's ${ns} namespace`);
  const ifaces = readFileSync(`/proc/${pid}/net/dev`, 'utf8')
    .split('\n')
    .slice(2)
    .map((l) => l.trim().split(':')[0])
    .filter((name) => name && name !== 'lo');
  if (ifaces.length) problems.push(`has network interfaces ${ifaces.join(', ')}`);
  return problems;
}

/** A process's memory cgroup (v1), or its cgroup (v2). */
export function workerCgroup(pid: number | 'self'): string | undefined {
  const text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  return /^\d+:memory:(\S+)$/m.exec(text)?.[1] ?? /^0::(\S+)$/m.exec(text)?.[1];
}
