import type { JobRecord } from '../store/store.js';

export interface FairShares {
  /** Jobs each tenant holds now (claimed, starting, running), across the nodes. */
  admitted: ReadonlyMap<string, number>;
  /** How many jobs this node started lately for each tenant (a decaying count: `RecentStarts`). */
  served?: ReadonlyMap<string, number>;
  weight?: (tenant: string) => number;
}

/**
 * The order a node considers queued jobs in. Tenants take turns, weighted: the tenant holding
 * the fewest admitted jobs for its weight goes next; when that ties (a node with one free slot
 * at a time), the tenant this node served least lately; then the one whose next job has waited
 * longest. So a tenant's burst of a thousand jobs cannot hold back another tenant's one, even
 * on a node that runs one job at a time, and a tenant of weight 2 gets twice the turns. A
 * job's `priority` orders its own tenant's jobs only (then the oldest first): no tenant can jump
 * the others by raising its priorities.
 */
export function fairOrder(queued: readonly JobRecord[], shares: FairShares): JobRecord[] {
  const weight = shares.weight ?? (() => 1);
  const perTenant = new Map<string, JobRecord[]>();
  for (const job of queued) {
    const list = perTenant.get(job.tenant) ?? [];
    list.push(job);
    perTenant.set(job.tenant, list);
  }
  const heads = [...perTenant.entries()].map(([tenant, jobs]) => ({
    tenant,
    weight: weight(tenant),
    held: shares.admitted.get(tenant) ?? 0,
    served: shares.served?.get(tenant) ?? 0,
    jobs: jobs.sort((a, b) => b.priority - a.priority || a.createdAt - b.createdAt),
    next: 0,
  }));
  type Head = (typeof heads)[number];
  const before = (h: Head, pick: Head): boolean => {
    const held = h.held / h.weight - pick.held / pick.weight;
    if (held !== 0) return held < 0;
    const served = h.served / h.weight - pick.served / pick.weight;
    if (served !== 0) return served < 0;
    return (h.jobs[h.next] as JobRecord).createdAt < (pick.jobs[pick.next] as JobRecord).createdAt;
  };
  const order: JobRecord[] = [];
  for (;;) {
    let pick: Head | undefined;
    for (const h of heads) if (h.jobs[h.next] && (!pick || before(h, pick))) pick = h;
    const job = pick?.jobs[pick.next];
    if (!pick || !job) break;
    order.push(job);
    pick.next++;
    pick.held++;
  }
  return order;
}

/**
 * Jobs this node started per tenant lately, each start counting less as it ages (half of it
 * after `halfLifeMs`): a tenant back after a quiet spell is not owed its whole absence.
 */
export class RecentStarts {
  private readonly counts = new Map<string, { value: number; at: number }>();

  constructor(private readonly halfLifeMs = 60_000) {}

  private decayed(tenant: string, now: number): number {
    const c = this.counts.get(tenant);
    return c ? c.value * 0.5 ** ((now - c.at) / this.halfLifeMs) : 0;
  }

  started(tenant: string, now = Date.now()): void {
    this.counts.set(tenant, { value: this.decayed(tenant, now) + 1, at: now });
  }

  snapshot(now = Date.now()): Map<string, number> {
    return new Map([...this.counts.keys()].map((t) => [t, this.decayed(t, now)]));
  }
}
