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
  // Tenants: where a job came from, infrastructure failures for the breaker, tokens with roles,
  // encrypted secrets, the hash-chained audit trail (append-only), webhook deliveries.
  `ALTER TABLE jobs ADD COLUMN origin JSONB NOT NULL DEFAULT '{"via":"cli","actor":"unknown"}';
   ALTER TABLE jobs ADD COLUMN group_key TEXT;
   ALTER TABLE jobs ADD COLUMN infra_failure BOOLEAN NOT NULL DEFAULT FALSE;
   CREATE INDEX jobs_by_group ON jobs (group_key) WHERE group_key IS NOT NULL;
   CREATE INDEX jobs_by_runtime ON jobs (runtime, created_at DESC);
   ALTER TABLE tokens ADD COLUMN id TEXT;
   UPDATE tokens SET id = substr(hash, 1, 12);
   ALTER TABLE tokens ALTER COLUMN id SET NOT NULL;
   ALTER TABLE tokens ADD CONSTRAINT tokens_id_unique UNIQUE (id);
   ALTER TABLE tokens ALTER COLUMN tenant DROP NOT NULL;
   ALTER TABLE tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'tenant';
   CREATE TABLE secrets (
     tenant TEXT NOT NULL,
     repository TEXT NOT NULL DEFAULT '',
     name TEXT NOT NULL,
     key_id TEXT NOT NULL,
     nonce TEXT NOT NULL,
     ciphertext TEXT NOT NULL,
     created_at BIGINT NOT NULL,
     updated_at BIGINT NOT NULL,
     PRIMARY KEY (tenant, repository, name)
   );
   CREATE TABLE audit (
     seq BIGINT PRIMARY KEY,
     at BIGINT NOT NULL,
     tenant TEXT,
     actor TEXT NOT NULL,
     action TEXT NOT NULL,
     subject TEXT NOT NULL,
     detail TEXT NOT NULL,
     prev_hash TEXT NOT NULL,
     hash TEXT NOT NULL
   );
   CREATE INDEX audit_by_tenant ON audit (tenant, seq);
   CREATE FUNCTION boxcar_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$;
   CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
     FOR EACH ROW EXECUTE FUNCTION boxcar_audit_append_only();
   CREATE TABLE deliveries (
     id TEXT PRIMARY KEY,
     forge TEXT NOT NULL,
     tenant TEXT NOT NULL,
     event JSONB NOT NULL,
     received_at BIGINT NOT NULL,
     state TEXT NOT NULL DEFAULT 'pending',
     owner TEXT,
     lease_until BIGINT,
     attempts INTEGER NOT NULL DEFAULT 0,
     jobs JSONB NOT NULL DEFAULT '[]',
     error TEXT
   );
   CREATE INDEX deliveries_by_state ON deliveries (state, received_at);`,
  // Peer-to-peer image transfers: peers, what each holds, who fetches which piece from the registry.
  `CREATE TABLE peers (
     node TEXT PRIMARY KEY,
     url TEXT,
     token_hash TEXT NOT NULL,
     alive_until BIGINT NOT NULL
   );
   CREATE TABLE peer_blobs (
     digest TEXT NOT NULL,
     node TEXT NOT NULL,
     size BIGINT NOT NULL,
     complete BOOLEAN NOT NULL,
     pieces TEXT NOT NULL,
     PRIMARY KEY (digest, node)
   );
   CREATE INDEX peer_blobs_by_node ON peer_blobs (node);
   CREATE TABLE peer_pieces (
     digest TEXT NOT NULL,
     idx INTEGER NOT NULL,
     node TEXT NOT NULL,
     claimed_at BIGINT NOT NULL,
     sha256 TEXT,
     PRIMARY KEY (digest, idx)
   );`,
  // Pipelines: the DAG as accepted, each job's attempts, and a version for safe concurrent updates.
  `CREATE TABLE pipelines (
     id TEXT PRIMARY KEY,
     tenant TEXT NOT NULL,
     name TEXT NOT NULL,
     state TEXT NOT NULL,
     plan JSONB NOT NULL,
     origin JSONB NOT NULL,
     classifier JSONB,
     jobs JSONB NOT NULL,
     cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
     version INTEGER NOT NULL DEFAULT 0,
     created_at BIGINT NOT NULL,
     finished_at BIGINT
   );
   CREATE INDEX pipelines_by_state ON pipelines (state, created_at);`,
];
