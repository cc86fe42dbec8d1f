import { createHash, randomBytes } from 'node:crypto';
import type { ApiToken, Store } from '../store/store.js';

const PREFIX = 'bxc_';

/**
 * API tokens: 32 random bytes, shown once; the store keeps only their SHA-256, so a leaked
 * database does not leak credentials. Looking a token up by its hash needs no constant-time
 * compare: the hash of a guess reveals nothing about the stored ones.
 */
export function newToken(): string {
  return `${PREFIX}${randomBytes(32).toString('base64url')}`;
}

export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** The token from `Authorization: Bearer …`, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return m?.[1];
}

/** Creates a token for a tenant (or an operator) and returns it: the only time it is seen whole. */
export async function createToken(
  store: Store,
  grant: { tenant: string | null; role: ApiToken['role'] },
  actor: string,
): Promise<{ token: string; id: string }> {
  const token = newToken();
  const id = `tok-${randomBytes(5).toString('hex')}`;
  await store.addToken({ hash: tokenHash(token), id, ...grant }, actor);
  return { token, id };
}
