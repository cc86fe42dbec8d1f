import { hostname } from 'node:os';
import { processAlive, processStartTicks } from './proc.js';

/**
 * Which process runs a job: `host:pid:start-ticks`. The start time tells a live owner from
 * a new process that happens to reuse a dead owner's pid.
 */
export function currentOwner(): string {
  return `${hostname()}:${process.pid}:${processStartTicks(process.pid) ?? 0}`;
}

/** Undefined when the owner lives on another host: only that host can judge it. */
export function ownerAlive(owner: string): boolean | undefined {
  const [host, pid, ticks] = owner.split(':');
  if (host !== hostname()) return undefined;
  const p = Number(pid);
  return processAlive(p) && String(processStartTicks(p) ?? 0) === ticks;
}
