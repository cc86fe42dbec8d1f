import { readFileSync, readlinkSync } from 'node:fs';

/**
 * What is wrong with a process Boxcar confines itself (a WASM worker, a microVM's VMM), read
 * from the host's /proc: empty when it is another process than this one, runs as a user other
 * than root with no capabilities, no_new_privs and a seccomp filter, in a cgroup of its own
 * under `cgroupPrefix` (not this process's), and in each of `namespaces` (mnt, net, …) of its
 * own. For tests and verify-isolation.
 */
export function confinementProblems(
  pid: number,
  expect: { cgroupPrefix: string; namespaces: string[] },
): string[] {
  const problems: string[] = [];
  if (pid === process.pid) problems.push('it runs in the boxcar process itself');
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) =>
    new RegExp(`^${name}:\\s+(.*)$`, 'm').exec(status)?.[1]?.trim().split(/\s+/) ?? [];
  if ([...field('Uid'), ...field('Gid')].some((id) => id === '0'))
    problems.push(`runs as root (Uid ${field('Uid')[0]})`);
  if (!/^0+$/.test(field('CapEff')[0] ?? '')) problems.push(`has capabilities ${field('CapEff')[0]}`);
  if (field('NoNewPrivs')[0] !== '1') problems.push('may gain privileges (no_new_privs unset)');
  if (field('Seccomp')[0] !== '2') problems.push('has no seccomp filter');
  const cgroup = processCgroup(pid);
  if (!cgroup?.startsWith(expect.cgroupPrefix) || cgroup === processCgroup('self'))
    problems.push(`is not in a cgroup of its own (${cgroup})`);
  for (const ns of expect.namespaces)
    if (readlinkSync(`/proc/${pid}/ns/${ns}`) === readlinkSync(`/proc/self/ns/${ns}`))
      problems.push(`shares boxcar's ${ns} namespace`);
  return problems;
}

/** A process's memory cgroup (v1), or its cgroup (v2). */
export function processCgroup(pid: number | 'self'): string | undefined {
  const text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  return /^\d+:memory:(\S+)$/m.exec(text)?.[1] ?? /^0::(\S+)$/m.exec(text)?.[1];
}
