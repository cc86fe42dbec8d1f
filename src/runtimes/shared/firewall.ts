import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { withContext } from '../../lib/errors.js';
import { ExecError, run } from '../../lib/exec.js';
import type { Logger } from '../../observability/logger.js';

export const JOB_SUBNET = '10.213.0.0/16';
export const HOST_IF_PREFIX = 'bxh';
/** The one table holding every rule for jobs: one `nft list` reads all of it back. */
export const FIREWALL_TABLE = ['inet', 'boxcar'] as const;

const BLOCKED_RANGES = [
  '10.0.0.0/8',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '169.254.0.0/16',
  '100.64.0.0/10',
  '127.0.0.0/8',
];

/**
 * Each job owns a /30 (network .0, host .1, job .2, broadcast .3) routed through its own veth:
 * a packet from a job must carry a source the host routes back through the veth it came in on
 * (that job's /30, as rp_filter would check) ending in .2 (the job's own address). Checked at
 * raw priority, so a forged packet never even gets a conntrack entry.
 */
const RULES = `
table inet boxcar {
  chain antispoof {
    type filter hook prerouting priority raw; policy accept;
    iifname "${HOST_IF_PREFIX}*" fib saddr . iif oif missing drop comment "a job sends from its own address only"
    iifname "${HOST_IF_PREFIX}*" ip saddr & 0.0.0.3 != 0.0.0.2 drop comment "a job sends from its own address only"
  }
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "${HOST_IF_PREFIX}*" drop comment "jobs never reach the host itself"
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname "${HOST_IF_PREFIX}*" meta nfproto ipv6 drop
    iifname "${HOST_IF_PREFIX}*" ip daddr { ${BLOCKED_RANGES.join(', ')} } drop comment "no internal networks, no other jobs"
    oifname "${HOST_IF_PREFIX}*" ct state established,related accept
    oifname "${HOST_IF_PREFIX}*" drop comment "nothing connects to a job"
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${JOB_SUBNET} oifname != "${HOST_IF_PREFIX}*" masquerade
  }
}
`;

/** Times this process found the table missing or changed and reinstalled it (a metric of serve's). */
let repairs = 0;
export const firewallRepairs = () => repairs;

/** The hash of the table as the kernel printed it right after this process installed it. */
let installedHash: string | undefined;
let pending: Promise<void> | undefined;

/**
 * Makes sure Boxcar's table is there exactly as installed, before each network job: one
 * `nft list table` (a few ms), hashed and compared with what this process installed. Missing or
 * changed, it is reinstalled (atomically) and read back again; if it still differs, the job is
 * refused. A job never starts with its rules missing.
 */
export function ensureFirewall(log: Logger): Promise<void> {
  // Jobs starting together share one check (and at most one reinstall).
  pending ??= checkOrInstall(log).finally(() => (pending = undefined));
  return pending;
}

async function checkOrInstall(log: Logger): Promise<void> {
  if (installedHash !== undefined) {
    const now = await readTableHash();
    if (now === installedHash) return;
    repairs++;
    log.warn(
      { table: FIREWALL_TABLE.join(' '), found: now === undefined ? 'missing' : 'changed' },
      'job firewall missing or changed: reinstalling it before the job starts',
    );
  }
  const expected = installedHash;
  await install();
  const hash = await readTableHash();
  if (hash === undefined || (expected !== undefined && hash !== expected))
    throw new Error(
      `refusing the network job: Boxcar's nftables table (${FIREWALL_TABLE.join(' ')}) does not read back as installed; check \`nft list table ${FIREWALL_TABLE.join(' ')}\``,
    );
  installedHash = hash;
}

/** The table's hash as `nft` prints it now; undefined when it is missing. */
export async function readTableHash(): Promise<string | undefined> {
  try {
    const { stdout } = await run('nft', ['list', 'table', ...FIREWALL_TABLE]);
    return createHash('sha256').update(normalize(stdout)).digest('hex');
  } catch (err) {
    if (err instanceof ExecError && /No such file or directory/.test(err.stderr)) return undefined;
    throw withContext('reading the job firewall back', err);
  }
}

/** Only the layout may vary between reads: blank lines and indentation. */
const normalize = (listing: string) =>
  listing
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join('\n');

/**
 * Replaces the table in one transaction (no moment without rules; the `add` lines make the
 * `delete` valid when it is missing; `ip boxcar_nat` is the earlier layout's NAT table), then
 * opens forwarding where jobs' packets enter: each job's veth (as it is created) and the uplinks.
 */
async function install(): Promise<void> {
  const replace = [
    'add table inet boxcar',
    'delete table inet boxcar',
    'add table ip boxcar_nat',
    'delete table ip boxcar_nat',
    RULES,
  ].join('\n');
  await run('nft', ['-f', '-'], { input: replace }).catch((err: unknown) => {
    throw withContext('installing the job firewall', err);
  });
  for (const dev of await uplinks()) await enableForwarding(dev);
}

/**
 * IPv4 forwards by the interface a packet comes in on (ip-sysctl: conf/IF/forwarding), and
 * replies to a job's NATed connections come in on the uplink: it must forward too, or nothing
 * ever comes back. Never host-wide (`ip_forward`, `conf/all`): every other interface keeps its own.
 */
export async function enableForwarding(dev: string): Promise<void> {
  await writeFile(`/proc/sys/net/ipv4/conf/${dev}/forwarding`, '1').catch((err: unknown) => {
    throw withContext(`enabling IPv4 forwarding on ${dev}`, err);
  });
}

/** The interfaces of the default routes (each next hop of a multipath one). */
export async function uplinks(): Promise<string[]> {
  const { stdout } = await run('ip', ['-j', '-4', 'route', 'show', 'default']);
  const routes = JSON.parse(stdout || '[]') as { dev?: string; nexthops?: { dev?: string }[] }[];
  const devs = routes.flatMap((r) => [r.dev, ...(r.nexthops ?? []).map((h) => h.dev)]);
  return [...new Set(devs.filter((d): d is string => d !== undefined))];
}
