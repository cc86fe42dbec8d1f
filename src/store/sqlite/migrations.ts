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
];
