import { after, before } from 'node:test';
import pgLib from 'pg';
import { startPostgres, type TestPostgres } from '../../testing/postgres.js';
import { storeConformance } from '../conformance.js';
import { PostgresStore } from './postgres-store.js';

const { Client } = pgLib;

/** The same contract as SQLite, against a real PostgreSQL started for this file. */
let pg: TestPostgres | undefined;
before(async () => {
  pg = await startPostgres();
});
after(async () => {
  await pg?.stop();
});
storeConformance(
  'postgres',
  () => PostgresStore.connect((pg as TestPostgres).url),
  async (sql) => {
    const client = new Client({ connectionString: (pg as TestPostgres).url });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  },
);
