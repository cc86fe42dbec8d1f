import { createHash } from 'node:crypto';

/**
 * The canary split for the seed's gradual migration: a job's bucket (0–99.99…) comes from a
 * hash of its id, so a retry of the same job lands on the same side of the split.
 */
export function canaryBucket(jobId: string): number {
  const h = createHash('sha256').update(jobId).digest();
  return (h.readUInt32BE(0) / 2 ** 32) * 100;
}

export function inCanary(jobId: string, percent: number): boolean {
  return canaryBucket(jobId) < percent;
}
