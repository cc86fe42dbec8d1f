import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import type { JobNetwork } from '../../jobs/spec.js';
import { ExecError, run } from '../../lib/exec.js';
import { ifExists } from '../../lib/errors.js';
import type { Logger } from '../../observability/logger.js';
import { enableForwarding, ensureFirewall, HOST_IF_PREFIX, JOB_SUBNET } from './firewall.js';

const SLOTS = 16_384; // /30 subnets in JOB_SUBNET

export interface NetworkLease {
  slot: number;
  netns: string;
  netnsPath: string;
  hostIf: string;
  jobIf: string;
  hostIp: string;
  jobIp: string;
}

export function leaseFor(slot: number): NetworkLease {
  const base = slot * 4; // offset inside 10.213.0.0/16
  const ip = (n: number) => `10.213.${(base + n) >> 8}.${(base + n) & 255}`;
  return {
    slot,
    netns: `bxn-${slot}`,
    netnsPath: `/var/run/netns/bxn-${slot}`,
    hostIf: `${HOST_IF_PREFIX}${slot}`,
    jobIf: `bxc${slot}`,
    hostIp: ip(1),
    jobIp: ip(2),
  };
}

/** tc tbf parameters from the seed's token bucket: `size` bytes refilled every `refillMs`. */
export function tbfArgs(bucket: { sizeBytes: number; refillMs: number }): string[] {
  const bitsPerSecond = Math.max(8, Math.round((bucket.sizeBytes * 8 * 1000) / bucket.refillMs));
  const burst = Math.max(bucket.sizeBytes, 1600); // at least one full frame, or nothing passes
  return ['rate', `${bitsPerSecond}bit`, 'burst', String(burst), 'latency', '100ms'];
}

/**
 * Network for a job that asks for it (none by default): its own network namespace, a veth
 * pair to the host, egress shaped by a token bucket (tc tbf, the seed's `bandwidth.size` bytes
 * per `refill_time` ms), and one nftables table for all jobs (see firewall.ts), checked before
 * each job, that drops whatever a job sends to the host itself, to internal ranges or to other
 * jobs, from any address but its own, and any connection opened towards a job. Public
 * destinations are reached through NAT.
 *
 * Claims a free /30 (creating the namespace is the claim: it fails if the name is taken).
 * `recordSlot` is told each candidate before it is claimed, so a crash between the claim and
 * the caller's own bookkeeping still leaves a record to clean up from.
 */
export async function setupNetwork(
  sandboxId: string,
  net: JobNetwork,
  recordSlot: (slot: number) => Promise<void>,
  log: Logger,
): Promise<NetworkLease> {
  await ensureFirewall(log);
  const start = createHash('sha256').update(sandboxId).digest().readUInt32BE(0) % SLOTS;
  for (let i = 0; i < SLOTS; i++) {
    const lease = leaseFor((start + i) % SLOTS);
    if (existsSync(lease.netnsPath)) continue;
    await recordSlot(lease.slot);
    try {
      await run('ip', ['netns', 'add', lease.netns]);
    } catch (err) {
      if (err instanceof ExecError && /exists/i.test(err.stderr)) continue;
      throw err;
    }
    try {
      await configure(lease, net);
      return lease;
    } catch (err) {
      await teardownNetwork(lease);
      throw err;
    }
  }
  throw new Error(`no free job subnet left in ${JOB_SUBNET}`);
}

async function configure(l: NetworkLease, net: JobNetwork): Promise<void> {
  const inNs = (...args: string[]) => run('ip', ['-n', l.netns, ...args]);
  await run('ip', ['link', 'add', l.hostIf, 'type', 'veth', 'peer', 'name', l.jobIf, 'netns', l.netns]);
  await run('ip', ['addr', 'add', `${l.hostIp}/30`, 'dev', l.hostIf]);
  await enableForwarding(l.hostIf); // only where the job's packets come in, not host-wide
  await run('ip', ['link', 'set', l.hostIf, 'up']);
  await inNs('addr', 'add', `${l.jobIp}/30`, 'dev', l.jobIf);
  await inNs('link', 'set', l.jobIf, 'up');
  await inNs('link', 'set', 'lo', 'up');
  await inNs('route', 'add', 'default', 'via', l.hostIp);
  await run('ip', [
    'netns',
    'exec',
    l.netns,
    'tc',
    'qdisc',
    'add',
    'dev',
    l.jobIf,
    'root',
    'tbf',
    ...tbfArgs(net.egress),
  ]);
}

/** Removes the namespace (which takes the veth pair with it) and its mount; idempotent. */
export async function teardownNetwork(l: NetworkLease): Promise<void> {
  if (existsSync(l.netnsPath)) {
    try {
      await run('ip', ['netns', 'del', l.netns]);
    } catch (err) {
      if (!(err instanceof ExecError && /No such file/i.test(err.stderr))) throw err;
    }
  }
  try {
    await run('ip', ['link', 'del', l.hostIf]);
  } catch (err) {
    if (!(err instanceof ExecError && /Cannot find device|does not exist/i.test(err.stderr))) throw err;
  }
}

/** The tap a microVM's NIC uses, inside the job's namespace: the same name in every one. */
export const VM_TAP = 'tap0';
const VM_BRIDGE = 'br0';

/**
 * Turns a job's namespace into a bridge for a microVM: the veth and a tap join one bridge and
 * the guest takes the job's address itself, so the host sees the same veth, the same address,
 * the same nftables rules and the same egress shaping (tbf on the veth) as for a container.
 * Only `tapOwner` (the VM's jailed VMM) may open the tap.
 */
export async function bridgeForVm(l: NetworkLease, tapOwner: number): Promise<void> {
  const inNs = (...args: string[]) => run('ip', ['-n', l.netns, ...args]);
  await inNs('addr', 'flush', 'dev', l.jobIf);
  await inNs('link', 'add', VM_BRIDGE, 'type', 'bridge');
  await inNs('link', 'set', l.jobIf, 'master', VM_BRIDGE);
  await inNs(
    'tuntap',
    'add',
    'dev',
    VM_TAP,
    'mode',
    'tap',
    'user',
    String(tapOwner),
    'group',
    String(tapOwner),
  );
  await inNs('link', 'set', VM_TAP, 'master', VM_BRIDGE);
  await inNs('link', 'set', VM_TAP, 'up');
  await inNs('link', 'set', VM_BRIDGE, 'up');
}

/**
 * A sandbox records its network slot in a file of its own (`network.json`) before the network
 * exists, so whatever happens next, the sandbox's destroy finds what to tear down.
 */
export const recordSlotIn = (file: string) => (slot: number) => writeFile(file, JSON.stringify({ slot }));

/** The slot recorded in `file`; undefined when the sandbox has no network. */
export async function recordedSlot(file: string): Promise<number | undefined> {
  const text = await ifExists(readFile(file, 'utf8'));
  return text === undefined ? undefined : (JSON.parse(text) as { slot: number }).slot;
}

/** Tears down the network whose slot is recorded in `file`, if any. */
export async function releaseRecordedNetwork(file: string): Promise<void> {
  const slot = await recordedSlot(file);
  if (slot !== undefined) await teardownNetwork(leaseFor(slot));
}
