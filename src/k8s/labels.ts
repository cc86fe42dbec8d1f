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
