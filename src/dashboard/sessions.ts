import { randomBytes } from 'node:crypto';
import type { ApiToken } from '../store/store.js';

export const SESSION_COOKIE = 'boxcar_session';
/** How long a login lasts: a working day, then the token is asked for again. */
export const SESSION_TTL_MS = 12 * 3600_000;
/** Past this many sessions, expired ones are swept at the next login. */
const SWEEP_AT = 1000;

/** A logged-in browser: which token it logged in with (by hash, to check it still exists). */
export interface Session {
  id: string;
  tokenHash: string;
  tokenId: string;
  tenant: string | null;
  role: ApiToken['role'];
  expiresAt: number;
}

/**
 * The dashboard's sessions, in this process's memory: the browser holds only a random id
 * (256 bits) in an HttpOnly cookie, never the API token, and a restart logs everyone out.
 */
export class Sessions {
  private readonly byId = new Map<string, Session>();

  constructor(private readonly ttlMs = SESSION_TTL_MS) {}

  create(token: ApiToken, now = Date.now()): Session {
    if (this.byId.size >= SWEEP_AT)
      for (const [id, s] of this.byId) if (s.expiresAt <= now) this.byId.delete(id);
    const session: Session = {
      id: randomBytes(32).toString('base64url'),
      tokenHash: token.hash,
      tokenId: token.id,
      tenant: token.tenant,
      role: token.role,
      expiresAt: now + this.ttlMs,
    };
    this.byId.set(session.id, session);
    return session;
  }

  /** The live session with this id; an expired one is forgotten. */
  get(id: string | undefined, now = Date.now()): Session | undefined {
    const s = id === undefined ? undefined : this.byId.get(id);
    if (s && s.expiresAt <= now) {
      this.byId.delete(s.id);
      return undefined;
    }
    return s;
  }

  delete(id: string): void {
    this.byId.delete(id);
  }
}

/** One cookie's value from a `Cookie` header. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
