import { createHash } from 'node:crypto';
import type { AuditEntry, AuditRecord } from './store.js';

export const GENESIS = '0'.repeat(64);

/**
 * The audit trail's hash chain, the same in every store: each record's hash covers the one
 * before it and every field of its own, so changing, removing or reordering a record breaks
 * every link after it. The first record follows GENESIS.
 */
export function auditHash(prevHash: string, r: Omit<AuditRecord, 'prevHash' | 'hash'>): string {
  return createHash('sha256')
    .update(prevHash)
    .update('\n')
    .update(JSON.stringify([r.seq, r.at, r.tenant, r.actor, r.action, r.subject, r.detail]))
    .digest('hex');
}

/** The next record after `head` (the last one stored, if any), hashed. */
export function nextAuditRecord(
  head: { seq: number; hash: string } | undefined,
  entry: AuditEntry,
  at: number,
): AuditRecord {
  const body = {
    seq: (head?.seq ?? 0) + 1,
    at,
    tenant: entry.tenant,
    actor: entry.actor,
    action: entry.action,
    subject: entry.subject,
    detail: JSON.stringify(entry.detail ?? {}),
  };
  const prevHash = head?.hash ?? GENESIS;
  return { ...body, prevHash, hash: auditHash(prevHash, body) };
}

/** The first record that does not follow from the one before it, and why. */
export interface BrokenLink {
  seq: number;
  why: string;
}

/**
 * Checks records in order against the chain so far (`prev`: the last good record before them,
 * or undefined at the start). Returns the first broken link, or the new last good record.
 */
export function checkChain(
  prev: { seq: number; hash: string } | undefined,
  records: readonly AuditRecord[],
): { broken: BrokenLink } | { last: { seq: number; hash: string } | undefined } {
  let last = prev;
  for (const r of records) {
    const expectedSeq = (last?.seq ?? 0) + 1;
    if (r.seq !== expectedSeq)
      return { broken: { seq: r.seq, why: `record ${expectedSeq} is missing (found ${r.seq} next)` } };
    const expectedPrev = last?.hash ?? GENESIS;
    if (r.prevHash !== expectedPrev)
      return { broken: { seq: r.seq, why: 'it does not point at the hash of the record before it' } };
    if (auditHash(r.prevHash, r) !== r.hash)
      return {
        broken: { seq: r.seq, why: 'its contents do not match its hash (changed after it was written)' },
      };
    last = { seq: r.seq, hash: r.hash };
  }
  return { last };
}
