import type { StatePaths } from '../lib/state-paths.js';
import { UserError, errorMessage } from '../lib/errors.js';
import { SqliteStore } from './sqlite/sqlite-store.js';
import type { Store } from './store.js';

/** The store a `--store` URL names: none = SQLite in the state directory; `postgres://…` for several nodes. */
export async function openStore(url: string | undefined, paths: StatePaths): Promise<Store> {
  if (!url) return new SqliteStore(paths.db);
  if (url.startsWith('sqlite:'))
    return new SqliteStore(url.slice('sqlite:'.length).replace(/^\/\//, '') || paths.db);
  if (storeIsShared(url)) {
    try {
      // Loaded only for several nodes: a one-node CLI does not pay for the driver.
      const { PostgresStore } = await import('./postgres/postgres-store.js');
      return await PostgresStore.connect(url);
    } catch (err) {
      throw new UserError(
        `--store ${url.replace(/:[^:@/]*@/, ':***@')}: cannot connect (${errorMessage(err)}); is PostgreSQL running there?`,
      );
    }
  }
  throw new UserError(
    `--store ${url}: use postgres://user@host:port/db, or leave it out for SQLite in the state directory`,
  );
}

/** Whether the store is one several nodes share (PostgreSQL), as opposed to one node's file. */
export function storeIsShared(url: string | undefined): boolean {
  return url !== undefined && /^postgres(ql)?:\/\//.test(url);
}
