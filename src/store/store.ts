import type { JobSpec, RuntimeName } from '../jobs/spec.js';
import type { JobState } from '../jobs/states.js';
import type { Decision, TrustInputs } from '../jobs/decision.js';
import type { TaskHandle } from '../jobs/handle.js';
import type { PipelineJobStatus, PipelineState } from '../pipelines/dag.js';
import type { PipelinePlan } from '../pipelines/plan.js';

/**
 * The one persistence seam: `sqlite` (embedded, the default) and later `postgres` (several
 * nodes) implement it. Async throughout so a networked store fits the same shape.
 */
export interface Store extends PeerDirectory {
  /** Records a queued job and, in the same transaction, the audit record of its submission. */
  createJob(input: NewJob): Promise<JobRecord>;
  getJob(id: string): Promise<JobRecord | undefined>;
  listJobs(filter?: JobFilter): Promise<JobRecord[]>;
  /**
   * Moves a job to `to` if that is a legal next state, with the fields that go with it; throws
   * otherwise. `audit`, when given, is appended in the same transaction. With `fence`, only if
   * the job's claim is still the writer's (else `Fenced`).
   */
  transition(
    id: string,
    to: JobState,
    patch?: JobPatch,
    reason?: string,
    audit?: AuditEntry,
    fence?: Fence,
  ): Promise<JobRecord>;
  /** Records the sandbox behind a job, before it is created and again once it exists. */
  saveHandle(id: string, handle: TaskHandle): Promise<void>;
  events(id: string): Promise<JobEvent[]>;
  /**
   * The most recent job starts on a runtime, oldest first, for the fallback breaker: `ok` when
   * the job's process started, not ok when its sandbox failed to start for reasons of the
   * runtime or the host (`infraFailure`). Refusals and jobs' own failures are not starts.
   */
  recentStarts(runtime: RuntimeName, limit: number): Promise<StartOutcome[]>;

  /**
   * Queued jobs a node may claim now (unowned or with an expired lease, past their retry
   * backoff): each tenant's first `perTenant` by priority then age, so one tenant's backlog
   * cannot hide another's jobs.
   */
  claimable(now: number, perTenant: number): Promise<JobRecord[]>;
  /** Takes a queued job for `owner` until `leaseUntil` if nobody holds it; undefined if lost. */
  claim(id: string, owner: string, leaseUntil: number): Promise<JobRecord | undefined>;
  /**
   * Claims as `claim` does, if `check` admits the job against its tenant's admitted usage read
   * in the same transaction, under a lock per tenant: two nodes cannot together admit past a
   * quota. `{ refused }` with `check`'s reason when it does not admit it.
   */
  claimWithinQuota(
    id: string,
    owner: string,
    leaseUntil: number,
    check: (used: Usage) => string | undefined,
  ): Promise<JobRecord | { refused: string } | undefined>;
  /** Heartbeat: extends the lease of every unfinished job `owner` holds; returns their ids. */
  renewLeases(owner: string, leaseUntil: number): Promise<string[]>;
  /** Gives a claimed job back to the queue (not admitted yet: no state change, no event). */
  release(id: string, owner: string, waitReason: string | null): Promise<void>;
  /**
   * Puts a job that could not run (infrastructure failure, lost node) back in the queue for
   * another attempt, unowned, not before `notBefore`.
   */
  requeue(id: string, notBefore: number, reason: string, opts?: RequeueOptions): Promise<JobRecord>;
  /** Started jobs whose owner's lease ran out (a lost node), for a live node to settle. */
  expiredLeases(now: number, limit: number): Promise<JobRecord[]>;
  /** Moves a job from a dead owner to `owner` (re-attaching to its sandbox); false if lost. */
  takeOver(id: string, from: string, owner: string, leaseUntil: number): Promise<boolean>;
  /** Marks a job for cancelling (a queued one is cancelled at once), audited as `actor`'s. */
  requestCancel(id: string, actor: string, reason?: string): Promise<JobRecord>;
  /** Unfinished jobs of `owner` that someone asked to cancel. */
  cancelRequests(owner: string): Promise<string[]>;
  /** Requests and limits of admitted (claimed, starting, running) jobs, per tenant, across every node. */
  admittedUsage(): Promise<Map<string, Usage>>;

  /**
   * The registry images (pinned references) of queued jobs and of jobs created since `since`,
   * those of queued jobs first, then the most used: what a node prefetches.
   */
  popularImages(since: number, limit: number): Promise<string[]>;

  /** Queued jobs by the runtime they were routed to, across every node. */
  queuedByRuntime(): Promise<Map<RuntimeName, number>>;

  /** How many of a tenant's jobs are in these states. */
  countJobs(tenant: string, states: JobState[]): Promise<number>;

  /** Stores an API token (its hash only), audited as `actor`'s. */
  addToken(token: ApiToken, actor: string): Promise<void>;
  tokenByHash(hash: string): Promise<ApiToken | undefined>;

  /** Creates or replaces a secret (sealed by the caller), audited by name only. */
  putSecret(secret: SealedSecret, actor: string): Promise<void>;
  /** Removes a secret; false if there was none. Audited by name only. */
  deleteSecret(scope: SecretScope, actor: string): Promise<boolean>;
  /** A tenant's secrets without their values, tenant-wide and per repository. */
  listSecrets(tenant: string): Promise<SecretInfo[]>;
  /** The sealed secrets named `names` of a tenant, tenant-wide (repository '') or of `repositories`. */
  secretsFor(tenant: string, repositories: string[], names: string[]): Promise<SealedSecret[]>;

  /** Appends to the hash-chained audit trail. */
  audit(entry: AuditEntry): Promise<void>;
  /** Audit records in order (oldest first), from `afterSeq`. */
  auditRecords(filter: AuditFilter): Promise<AuditRecord[]>;

  /** Remembers a webhook delivery; false when its id was seen already (a replay). */
  addDelivery(delivery: NewDelivery): Promise<boolean>;
  /** Pending deliveries nobody holds (or whose holder's lease ran out), taken for `owner`. */
  claimDeliveries(owner: string, leaseUntil: number, limit: number): Promise<Delivery[]>;
  /** A delivery's outcome: the jobs it queued, or why it queued none. */
  settleDelivery(
    id: string,
    state: 'done' | 'failed',
    outcome: { jobs?: string[]; error?: string },
  ): Promise<void>;
  getDelivery(id: string): Promise<Delivery | undefined>;
  /** Forgets deliveries received before `before`; returns how many. */
  pruneDeliveries(before: number): Promise<number>;

  /** Records a pipeline, running, with none of its jobs queued yet. */
  createPipeline(p: NewPipeline): Promise<PipelineRecord>;
  getPipeline(id: string): Promise<PipelineRecord | undefined>;
  /** Newest first. */
  listPipelines(filter?: PipelineFilter): Promise<PipelineRecord[]>;
  /**
   * Writes a pipeline's progress unless someone else did since it was read at `version`
   * (undefined then: read it again and re-evaluate). Several nodes advance one pipeline safely.
   */
  updatePipeline(id: string, version: number, patch: PipelinePatch): Promise<PipelineRecord | undefined>;

  close(): Promise<void>;
}

/**
 * The directory of peer-to-peer image transfers between nodes that share the store: who is a
 * peer, which blobs (or which pieces of them) each holds, and who fetches which piece from the
 * registry. There is no scheduler: each node reads and writes these rows.
 */
export interface PeerDirectory {
  /** Announces or renews a node as a peer until `aliveUntil` (its heartbeat). */
  announcePeer(peer: Peer): Promise<void>;
  /** A peer alive at `now`, for checking the credential it presents. */
  livePeer(node: string, now: number): Promise<Peer | undefined>;
  /** A node leaving: its announcement, holdings and unfinished piece claims go. */
  withdrawPeer(node: string): Promise<void>;
  /** What a node holds of a blob now: all of it, or the pieces set in `pieces`. */
  holdBlob(holding: BlobHolding): Promise<void>;
  /** A node no longer holds the blob (pruned, or its transfer failed). */
  dropBlob(node: string, digest: string): Promise<void>;
  /** Peers alive at `now` that serve (have a URL) and hold any of the blob, other than `except`. */
  blobHolders(digest: string, except: string, now: number): Promise<Array<BlobHolding & { url: string }>>;
  /**
   * Takes piece `index` of a blob for `node` to fetch from the registry: true when it is now
   * the node's (unclaimed, or claimed by a peer no longer alive, or left unfinished for
   * `staleMs`), false when a live peer has it.
   */
  claimPiece(digest: string, index: number, node: string, now: number, staleMs: number): Promise<boolean>;
  /** The claimed piece arrived from the registry: its sha256, for peers to check their copies. */
  pieceFetched(digest: string, index: number, node: string, sha256: string): Promise<void>;
  /** The claims on a blob's pieces. */
  pieceClaims(digest: string): Promise<PieceClaim[]>;
}

export interface Peer {
  /** The node's owner id (`host:pid:start`). */
  node: string;
  /** Where it serves pieces; null for a node that fetches from peers but serves none. */
  url: string | null;
  /** sha256 (hex) of the secret it presents to its peers: node credentials, not a tenant's. */
  tokenHash: string;
  aliveUntil: number;
}

export interface BlobHolding {
  node: string;
  digest: string;
  size: number;
  complete: boolean;
  /** The pieces held, as a bitmap (base64), while the transfer is under way; '' once complete. */
  pieces: string;
}

export interface PieceClaim {
  index: number;
  node: string;
  claimedAt: number;
  /** Set once the piece arrived from the registry. */
  sha256: string | null;
}

/** What admitted jobs hold, in the units of a ResourceQuota. */
export interface Usage {
  pods: number;
  requestsMemoryBytes: number;
  limitsMemoryBytes: number;
  requestsCpuMillis: number;
  limitsCpuMillis: number;
}

export const ZERO_USAGE: Usage = {
  pods: 0,
  requestsMemoryBytes: 0,
  limitsMemoryBytes: 0,
  requestsCpuMillis: 0,
  limitsCpuMillis: 0,
};

export interface NewJob {
  id: string;
  tenant: string;
  spec: JobSpec;
  decision: Decision;
  origin: JobOrigin;
  /**
   * Which process runs the job (`host:pid:starttime`), so a dead owner can be told from a live
   * one; null for a job queued for any node to claim.
   */
  owner: string | null;
}

/** How a job came in and who sent it: for the audit trail, repository secrets and auto-cancel. */
export interface JobOrigin {
  via: 'cli' | 'api' | 'webhook';
  /** Who sent it: `token:<id>`, `operator:<user>`, `webhook:github:<delivery>`. */
  actor: string;
  /** The repository its code comes from, when Boxcar verified it (a signed webhook): repository secrets need it. */
  repository?: string;
  /** Jobs of one pull request: a newer push cancels the jobs of the older ones (e.g. `github:org/app#12`). */
  group?: string;
  /** The commit the jobs of `group` run at. */
  commit?: string;
  /** The pipeline the job is part of. */
  pipeline?: string;
}

export interface JobResultFields {
  exitCode: number | null;
  oomKilled: boolean;
  timedOut: boolean;
  startupMs: number | null;
  durationMs: number | null;
  peakMemoryBytes: number | null;
  cpuUsageNs: number | null;
  costDollars: number | null;
}

export interface JobRecord extends JobResultFields {
  id: string;
  tenant: string;
  name: string;
  state: JobState;
  runtime: RuntimeName;
  spec: JobSpec;
  decision: Decision;
  origin: JobOrigin;
  handle: TaskHandle | null;
  owner: string | null;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  error: string | null;
  priority: number;
  /** How many times the job was given back to the queue after an infrastructure failure. */
  attempts: number;
  /** Until when `owner` holds the job (serving nodes); null for a foreground `boxcar run`. */
  leaseUntil: number | null;
  notBefore: number;
  cancelRequested: boolean;
  /** Why a queued job is still waiting (quota, capacity), as last seen by a scheduler. */
  waitReason: string | null;
  /** Its sandbox failed to start for reasons of the runtime or the host (what the breaker counts). */
  infraFailure: boolean;
}

export type JobPatch = Partial<
  JobResultFields & {
    startedAt: number;
    finishedAt: number;
    error: string;
    runtime: RuntimeName;
    owner: string | null;
    leaseUntil: number | null;
    infraFailure: boolean;
  }
>;

export interface JobFilter {
  limit?: number;
  tenant?: string;
  states?: JobState[];
  /** Jobs of one pull request (`JobOrigin.group`). */
  group?: string;
}

export interface JobEvent {
  jobId: string;
  at: number;
  from: JobState | null;
  to: JobState;
  reason: string | null;
}

export interface StartOutcome {
  at: number;
  ok: boolean;
}

/** An API token: the store keeps its hash; `id` names it in the audit trail and in listings. */
export interface ApiToken {
  hash: string;
  id: string;
  /** The tenant whose jobs it submits and sees; null for an operator token without one. */
  tenant: string | null;
  /** `operator` may also read the node's metrics and status. */
  role: 'tenant' | 'operator';
}

/** Where a secret belongs: a tenant, and a repository of it ('' = every job of the tenant). */
export interface SecretScope {
  tenant: string;
  repository: string;
  name: string;
}

/** A secret as the store keeps it: AES-256-GCM ciphertext, never its value. */
export interface SealedSecret extends SecretScope {
  /** Which key sealed it (a digest of the key), to say so when a node has another. */
  keyId: string;
  nonce: string;
  ciphertext: string;
}

export interface SecretInfo extends SecretScope {
  updatedAt: number;
}

/** One entry of the audit trail, as a caller describes it. */
export interface AuditEntry {
  tenant: string | null;
  actor: string;
  /** e.g. job.submitted, job.started, job.cancel, token.created, secret.set, request.refused */
  action: string;
  /** What it is about: a job id, a secret's scope, a token id. */
  subject: string;
  detail?: Record<string, unknown>;
}

/** As stored: numbered, timed and chained to the one before by its hash. */
export interface AuditRecord {
  seq: number;
  at: number;
  tenant: string | null;
  actor: string;
  action: string;
  subject: string;
  /** The detail as stored (JSON text): hashed as it is. */
  detail: string;
  prevHash: string;
  hash: string;
}

export interface AuditFilter {
  afterSeq?: number;
  tenant?: string;
  since?: number;
  limit: number;
}

/** A webhook delivery, remembered so a replay queues nothing. */
export interface NewPipeline {
  id: string;
  tenant: string;
  name: string;
  plan: PipelinePlan;
  origin: JobOrigin;
  /** For webhook pipelines: what the payload says of the code, for every job queued later. */
  classifier?: TrustInputs;
  createdAt: number;
}

export interface PipelineRecord extends NewPipeline {
  state: PipelineState;
  /** Each job's attempts (job ids, the last current) or why it was skipped, by name. */
  jobs: Record<string, PipelineJobStatus>;
  cancelRequested: boolean;
  /** Bumped by every update: a write made from an older read is refused. */
  version: number;
  finishedAt: number | null;
}

export type PipelinePatch = Partial<
  Pick<PipelineRecord, 'state' | 'jobs' | 'cancelRequested' | 'finishedAt'>
>;

export interface PipelineFilter {
  tenant?: string;
  states?: PipelineState[];
  limit?: number;
}

export interface NewDelivery {
  id: string;
  /** e.g. github */
  forge: string;
  tenant: string;
  /** What the worker needs to queue its jobs (the parsed event, the classifier's trust inputs). */
  event: Record<string, unknown>;
  receivedAt: number;
}

export interface Delivery extends NewDelivery {
  state: 'pending' | 'done' | 'failed';
  attempts: number;
  jobs: string[];
  error: string | null;
}

export interface RequeueOptions {
  infraFailure?: boolean;
  /**
   * Only if the job still has this owner and this lease (what the caller read): another node
   * may have taken it since. Otherwise IllegalTransition, and nothing changes.
   */
  expect?: { owner: string | null; leaseUntil: number | null };
  /** Only if the job's claim is still the caller's (see Fence). */
  fence?: Fence;
}

/** A requeue asked for a job someone asked to cancel: it ends cancelled instead (a cancel outlives a lost node). */
export const CANCELLED_AT_REQUEUE = 'cancelled: a cancel was requested before it could run again';

export class IllegalTransition extends Error {
  constructor(id: string, from: JobState, to: JobState, why?: string) {
    super(why ?? `job ${id} cannot go from ${from} to ${to}`);
    this.name = 'IllegalTransition';
  }
}

/**
 * A fencing token: the claim a node holds on a job (its owner, which is one process of one
 * node, and the job's attempt). A node that was paused or cut off, and whose job was taken
 * over or run again meanwhile, holds a stale one: its writes are refused.
 */
export interface Fence {
  owner: string;
  attempts: number;
}

export class Fenced extends IllegalTransition {
  constructor(id: string, state: JobState, to: JobState, holder: Fence, stale: Fence) {
    super(
      id,
      state,
      to,
      `job ${id} moved on: its claim is ${holder.owner} (attempt ${holder.attempts + 1}), not ${stale.owner} (attempt ${stale.attempts + 1}); the write of ${to} was refused`,
    );
    this.name = 'Fenced';
  }
}

/** Refuses a write whose fence is not the job's claim now. */
export function checkFence(
  id: string,
  now: { state: JobState; owner: string | null; attempts: number },
  to: JobState,
  fence: Fence | undefined,
): void {
  if (fence && (now.owner !== fence.owner || now.attempts !== fence.attempts))
    throw new Fenced(id, now.state, to, { owner: now.owner ?? '(none)', attempts: now.attempts }, fence);
}
