import type { JobRecord } from '../store/store.js';
import type { Session } from './sessions.js';

/** Who is looking: a tenant sees its own jobs; an operator sees the whole fleet. */
export type Viewer = Pick<Session, 'tenant' | 'role'>;

export function canSee(v: Viewer, job: Pick<JobRecord, 'tenant'>): boolean {
  return v.role === 'operator' || job.tenant === v.tenant;
}

/** The store filter for what the viewer may list: its tenant, or everything for an operator. */
export function tenantFilter(v: Viewer): { tenant?: string } {
  if (v.role === 'operator') return {};
  // Login refuses such tokens; a tenant filter left empty would list every tenant's jobs.
  if (!v.tenant) throw new Error('a tenant viewer without a tenant');
  return { tenant: v.tenant };
}
