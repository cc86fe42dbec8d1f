import type { JobRecord } from '../store/store.js';

/**
 * The order a node considers queued jobs in. Higher priority first; within a priority, tenants
 * take turns, the one holding the fewest admitted jobs first (ties: the oldest waiting job),
 * and each tenant's jobs go oldest first. A tenant's burst of a thousand jobs thus cannot
 * starve another tenant's one.
 */
export function fairOrder(queued: readonly JobRecord[], admitted: ReadonlyMap<string, number>): JobRecord[] {
  const byPriority = new Map<number, JobRecord[]>();
  for (const job of queued) {
    const level = byPriority.get(job.priority) ?? [];
    level.push(job);
    byPriority.set(job.priority, level);
  }
  const order: JobRecord[] = [];
  const held = new Map(admitted);
  for (const priority of [...byPriority.keys()].sort((a, b) => b - a)) {
    const perTenant = new Map<string, JobRecord[]>();
    for (const job of (byPriority.get(priority) ?? []).sort((a, b) => a.createdAt - b.createdAt)) {
      const list = perTenant.get(job.tenant) ?? [];
      list.push(job);
      perTenant.set(job.tenant, list);
    }
    const heads = [...perTenant.entries()].map(([tenant, jobs]) => ({ tenant, jobs, next: 0 }));
    for (;;) {
      let pick: (typeof heads)[number] | undefined;
      for (const h of heads) {
        const head = h.jobs[h.next];
        if (!head) continue;
        const pickHead = pick?.jobs[pick.next];
        if (
          !pick ||
          !pickHead ||
          (held.get(h.tenant) ?? 0) < (held.get(pick.tenant) ?? 0) ||
          ((held.get(h.tenant) ?? 0) === (held.get(pick.tenant) ?? 0) && head.createdAt < pickHead.createdAt)
        )
          pick = h;
      }
      const job = pick?.jobs[pick.next];
      if (!pick || !job) break;
      order.push(job);
      pick.next++;
      held.set(pick.tenant, (held.get(pick.tenant) ?? 0) + 1);
    }
  }
  return order;
}
