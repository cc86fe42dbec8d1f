/** The labels Boxcar puts on what it creates: to find its own objects, and a tenant's. */

export const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'boxcar' } as const;
export const TENANT_LABEL = 'boxcar.dev/tenant';

/** Pod Security admission: every Pod in the namespace must pass the "restricted" profile. */
export const RESTRICTED_NAMESPACE = {
  'pod-security.kubernetes.io/enforce': 'restricted',
  'pod-security.kubernetes.io/enforce-version': 'latest',
  'pod-security.kubernetes.io/warn': 'restricted',
  'pod-security.kubernetes.io/audit': 'restricted',
} as const;

/** A job's Pod (and its Secret): which job, which attempt's sandbox, made by which node, on which runtime. */
export const JOB_LABEL = 'boxcar.dev/job';
export const SANDBOX_LABEL = 'boxcar.dev/sandbox';
/** The node id (its state directory's) that made the Pod: after a restart, its own strays are found by it. */
export const NODE_LABEL = 'boxcar.dev/node';
export const RUNTIME_LABEL = 'boxcar.dev/runtime';
