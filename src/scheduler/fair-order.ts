import type { JobRecord } from '../store/store.js';

/**
 * The order a node considers queued jobs in. Tenants take turns, weighted: the tenant whose
 * admitted jobs are fewest for its weight goes next (ties: the one whose next job has waited
 * longest), so a tenant's burst of a thousand jobs cannot starve another tenant's one, and a
 * tenant of weight 2 gets twice the turns. A job's `priority` orders its own tenant's jobs
 * only (then the oldest first): no tenant can jump the others by raising its priorities.
 */
export function fairOrder(
  queued: readonly JobRecord[],
  admitted: ReadonlyMap<string, number>,
  weight: (tenant: string) => number = () => 1,
): JobRecord[] {
  const perTenant = new Map<string, JobRecord[]>();
  for (const job of queued) {
    const list = perTenant.get(job.tenant) ?? [];
    list.push(job);
    perTenant.set(job.tenant, list);
  }
  const heads = [...perTenant.entries()].map(([tenant, jobs]) => ({
    tenant,
    weight: weight(tenant),
    held: admitted.get(tenant) ?? 0,
    jobs: jobs.sort((a, b) => b.priority - a.priority || a.createdAt - b.createdAt),
    next: 0,
  }));
  const order: JobRecord[] = [];
  for (;;) {
    let pick: (typeof heads)[number] | undefined;
    for (const h of heads) {
      const head = h.jobs[h.next];
      if (!head) continue;
      const best = pick?.jobs[pick.next];
      if (!pick || !best) {
        pick = h;
        continue;
      }
      const share = h.held / h.weight;
      const bestShare = pick.held / pick.weight;
      if (share < bestShare || (share === bestShare && head.createdAt < best.createdAt)) pick = h;
    }
    const job = pick?.jobs[pick.next];
    if (!pick || !job) break;
    order.push(job);
    pick.next++;
    pick.held++;
  }
  return order;
}
