/** Schema versions, applied in order under an advisory lock (several nodes may start at once). */
export const PG_MIGRATIONS: string[] = [
  `CREATE TABLE jobs (
     seq BIGSERIAL UNIQUE,
     id TEXT PRIMARY KEY,
     tenant TEXT NOT NULL,
     name TEXT NOT NULL,
     state TEXT NOT NULL,
     runtime TEXT NOT NULL,
     spec JSONB NOT NULL,
     decision JSONB NOT NULL,
     handle JSONB,
     owner TEXT,
     created_at BIGINT NOT NULL,
     started_at BIGINT,
     finished_at BIGINT,
     exit_code INTEGER,
     oom_killed BOOLEAN NOT NULL DEFAULT FALSE,
     timed_out BOOLEAN NOT NULL DEFAULT FALSE,
     startup_ms DOUBLE PRECISION,
     duration_ms DOUBLE PRECISION,
     peak_memory_bytes BIGINT,
     cpu_usage_ns BIGINT,
     cost_dollars DOUBLE PRECISION,
     error TEXT,
     priority INTEGER NOT NULL DEFAULT 0,
     attempts INTEGER NOT NULL DEFAULT 0,
     lease_until BIGINT,
     not_before BIGINT NOT NULL DEFAULT 0,
     cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
     wait_reason TEXT
   );
   CREATE INDEX jobs_by_created ON jobs (created_at DESC);
   CREATE INDEX jobs_by_tenant ON jobs (tenant, created_at DESC);
   CREATE INDEX jobs_queue ON jobs (state, priority DESC, created_at);
   CREATE INDEX jobs_by_owner ON jobs (owner, state);
   CREATE TABLE job_events (
     seq BIGSERIAL PRIMARY KEY,
     job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
     at BIGINT NOT NULL,
     from_state TEXT,
     to_state TEXT NOT NULL,
     reason TEXT
   );
   CREATE INDEX job_events_by_job ON job_events (job_id, seq);
   CREATE TABLE tokens (
     hash TEXT PRIMARY KEY,
     tenant TEXT NOT NULL,
     created_at BIGINT NOT NULL
   );`,
];
