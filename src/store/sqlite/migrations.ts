/** Schema versions, applied in order; `PRAGMA user_version` records how far a database is. */
export const MIGRATIONS: string[] = [
  `CREATE TABLE jobs (
     id TEXT PRIMARY KEY,
     tenant TEXT NOT NULL,
     name TEXT NOT NULL,
     state TEXT NOT NULL,
     runtime TEXT NOT NULL,
     spec TEXT NOT NULL,
     decision TEXT NOT NULL,
     handle TEXT,
     owner TEXT,
     created_at INTEGER NOT NULL,
     started_at INTEGER,
     finished_at INTEGER,
     exit_code INTEGER,
     oom_killed INTEGER NOT NULL DEFAULT 0,
     timed_out INTEGER NOT NULL DEFAULT 0,
     startup_ms REAL,
     duration_ms REAL,
     peak_memory_bytes INTEGER,
     cpu_usage_ns INTEGER,
     cost_dollars REAL,
     error TEXT
   );
   CREATE INDEX jobs_by_created ON jobs (created_at DESC);
   CREATE INDEX jobs_by_tenant ON jobs (tenant, created_at DESC);
   CREATE INDEX jobs_by_state ON jobs (state);
   CREATE TABLE job_events (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
     at INTEGER NOT NULL,
     from_state TEXT,
     to_state TEXT NOT NULL,
     reason TEXT
   );
   CREATE INDEX job_events_by_job ON job_events (job_id, seq);`,
  // The queue of a serving node: priorities, leases, retries, cancel requests, tenants' tokens.
  `ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
   ALTER TABLE jobs ADD COLUMN not_before INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE jobs ADD COLUMN wait_reason TEXT;
   CREATE INDEX jobs_queue ON jobs (state, priority DESC, created_at);
   CREATE INDEX jobs_by_owner ON jobs (owner, state);
   UPDATE jobs SET spec = json_set(spec, '$.priority', 0, '$.requests',
       json_object('memoryBytes', json_extract(spec, '$.limits.memoryBytes'),
                   'cpuMillis', min(100, json_extract(spec, '$.limits.cpuMillis'))))
     WHERE json_extract(spec, '$.requests') IS NULL;
   CREATE TABLE tokens (
     hash TEXT PRIMARY KEY,
     tenant TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );`,
  // Tenants: where a job came from, infrastructure failures for the breaker, tokens with roles,
  // encrypted secrets, the hash-chained audit trail (append-only), webhook deliveries.
  `ALTER TABLE jobs ADD COLUMN origin TEXT NOT NULL DEFAULT '{"via":"cli","actor":"unknown"}';
   ALTER TABLE jobs ADD COLUMN group_key TEXT;
   ALTER TABLE jobs ADD COLUMN infra_failure INTEGER NOT NULL DEFAULT 0;
   CREATE INDEX jobs_by_group ON jobs (group_key) WHERE group_key IS NOT NULL;
   CREATE INDEX jobs_by_runtime ON jobs (runtime, created_at DESC);
   CREATE TABLE tokens_v3 (
     hash TEXT PRIMARY KEY,
     id TEXT NOT NULL UNIQUE,
     tenant TEXT,
     role TEXT NOT NULL DEFAULT 'tenant',
     created_at INTEGER NOT NULL
   );
   INSERT INTO tokens_v3 (hash, id, tenant, role, created_at)
     SELECT hash, substr(hash, 1, 12), tenant, 'tenant', created_at FROM tokens;
   DROP TABLE tokens;
   ALTER TABLE tokens_v3 RENAME TO tokens;
   CREATE TABLE secrets (
     tenant TEXT NOT NULL,
     repository TEXT NOT NULL DEFAULT '',
     name TEXT NOT NULL,
     key_id TEXT NOT NULL,
     nonce TEXT NOT NULL,
     ciphertext TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL,
     PRIMARY KEY (tenant, repository, name)
   );
   CREATE TABLE audit (
     seq INTEGER PRIMARY KEY,
     at INTEGER NOT NULL,
     tenant TEXT,
     actor TEXT NOT NULL,
     action TEXT NOT NULL,
     subject TEXT NOT NULL,
     detail TEXT NOT NULL,
     prev_hash TEXT NOT NULL,
     hash TEXT NOT NULL
   );
   CREATE INDEX audit_by_tenant ON audit (tenant, seq);
   CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
     BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
   CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
     BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
   CREATE TABLE deliveries (
     id TEXT PRIMARY KEY,
     forge TEXT NOT NULL,
     tenant TEXT NOT NULL,
     event TEXT NOT NULL,
     received_at INTEGER NOT NULL,
     state TEXT NOT NULL DEFAULT 'pending',
     owner TEXT,
     lease_until INTEGER,
     attempts INTEGER NOT NULL DEFAULT 0,
     jobs TEXT NOT NULL DEFAULT '[]',
     error TEXT
   );
   CREATE INDEX deliveries_by_state ON deliveries (state, received_at);`,
  // Peer-to-peer image transfers: peers, what each holds, who fetches which piece from the registry.
  `CREATE TABLE peers (
     node TEXT PRIMARY KEY,
     url TEXT,
     token_hash TEXT NOT NULL,
     alive_until INTEGER NOT NULL
   );
   CREATE TABLE peer_blobs (
     digest TEXT NOT NULL,
     node TEXT NOT NULL,
     size INTEGER NOT NULL,
     complete INTEGER NOT NULL,
     pieces TEXT NOT NULL,
     PRIMARY KEY (digest, node)
   );
   CREATE INDEX peer_blobs_by_node ON peer_blobs (node);
   CREATE TABLE peer_pieces (
     digest TEXT NOT NULL,
     idx INTEGER NOT NULL,
     node TEXT NOT NULL,
     claimed_at INTEGER NOT NULL,
     sha256 TEXT,
     PRIMARY KEY (digest, idx)
   );`,
  // Pipelines: the DAG as accepted, each job's attempts, and a version for safe concurrent updates.
  `CREATE TABLE pipelines (
     id TEXT PRIMARY KEY,
     tenant TEXT NOT NULL,
     name TEXT NOT NULL,
     state TEXT NOT NULL,
     plan TEXT NOT NULL,
     origin TEXT NOT NULL,
     classifier TEXT,
     jobs TEXT NOT NULL,
     cancel_requested INTEGER NOT NULL DEFAULT 0,
     version INTEGER NOT NULL DEFAULT 0,
     created_at INTEGER NOT NULL,
     finished_at INTEGER
   );
   CREATE INDEX pipelines_by_state ON pipelines (state, created_at);`,
];
