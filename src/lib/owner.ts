import { randomUUID } from 'node:crypto';
import { openSync, closeSync, readFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { errnoCode } from './errors.js';
import { processAlive, processStartTicks } from './proc.js';

const ids = new Map<string, string>();

/**
 * This node's id: made once for a state directory (`node-id` in it) and kept. Two nodes with
 * the same hostname (containers, clones of one VM image) never take each other's jobs for
 * their own; processes sharing a state directory are one node.
 */
export function nodeId(stateRoot: string): string {
  const known = ids.get(stateRoot);
  if (known) return known;
  const file = path.join(stateRoot, 'node-id');
  let id: string;
  try {
    const fd = openSync(file, 'wx', 0o600); // the first process to get here makes it
    id = randomUUID();
    writeSync(fd, `${id}\n`);
    closeSync(fd);
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw err;
    id = readFileSync(file, 'utf8').trim();
    if (!/^[0-9a-f-]{36}$/.test(id))
      throw new Error(`${file} does not hold a node id; remove it to make a new one`);
  }
  ids.set(stateRoot, id);
  return id;
}

/**
 * Which process runs a job: `node-id:pid:start-ticks`. The start time tells a live owner from
 * a new process that happens to reuse a dead owner's pid.
 */
export function currentOwner(stateRoot: string): string {
  return `${nodeId(stateRoot)}:${process.pid}:${processStartTicks(process.pid) ?? 0}`;
}

/** Whether an owner is a process of this node; undefined for another node's: only that node can judge it. */
export function ownerAlive(owner: string, stateRoot: string): boolean | undefined {
  const [node, pid, ticks] = owner.split(':');
  if (node !== nodeId(stateRoot)) return undefined;
  const p = Number(pid);
  return processAlive(p) && String(processStartTicks(p) ?? 0) === ticks;
}

/** Whether a job's owner was a process of this node. */
export const ownedHere = (owner: string | null, stateRoot: string) =>
  owner !== null && owner.split(':')[0] === nodeId(stateRoot);
