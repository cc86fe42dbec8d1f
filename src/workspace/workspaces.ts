import { readdir, rmdir, statfs } from 'node:fs/promises';
import path from 'node:path';
import { errorMessage, ifExists, UserError, withContext } from '../lib/errors.js';
import { formatBytes } from '../lib/quantity.js';
import type { UnpackLimits } from '../lib/tar-read.js';
import type { WorkspaceAttributes } from '../jobs/handle.js';
import type { JobSpec } from '../jobs/spec.js';
import type { Logger } from '../observability/logger.js';
import { mountTmpfs, unmount } from '../runtimes/shared/mounts.js';
import type { JobRecord } from '../store/store.js';
import type { GitProtocol } from '../checkout/git.js';
import type { Mirrors } from '../checkout/mirror.js';
import type { Artifacts } from './artifacts.js';
import { cacheNamespace, type Caches, type CacheScope } from './caches.js';

export interface WorkspacesOptions {
  /** Where job workspaces are mounted, one directory per job. */
  dir: string;
  mirrors: Mirrors;
  artifacts: Artifacts;
  caches: Caches;
  protocols: readonly GitProtocol[];
  logger: Logger;
  /** The jobs whose artifacts a job needs (by id), as recorded. */
  getJob: (id: string) => Promise<JobRecord | undefined>;
}

/** Whether filling a workspace failed for want of room (git does not always say so). */
async function isFull(dir: string): Promise<boolean> {
  const s = await statfs(dir).catch(() => undefined);
  return s !== undefined && s.bavail * s.bsize < Math.max(2 ** 20, s.blocks * s.bsize * 0.02);
}

/** Whether a job needs a workspace of Boxcar's (files in, or files out); else its sandbox's own tmpfs does. */
export const wantsWorkspace = (spec: JobSpec) =>
  spec.checkout !== undefined ||
  spec.artifacts !== undefined ||
  spec.cache !== undefined ||
  spec.artifactsFrom.length > 0;

/**
 * A job's workspace on the host: a tmpfs of the job's workspace size, filled before the job
 * (its checkout, then the artifacts of the jobs it needs, then its cache) and read after it
 * (its artifacts, its cache), then removed. Everything in it may come from untrusted code;
 * nothing here follows a link in it (see extract.ts and collect.ts, and git's own checkout).
 */
export class Workspaces {
  /** Artifacts jobs kept, for downloads. */
  readonly artifacts: Artifacts;

  constructor(private readonly opts: WorkspacesOptions) {
    this.artifacts = opts.artifacts;
  }

  dirOf(jobId: string): string {
    return path.join(this.opts.dir, jobId);
  }

  private limits(job: JobRecord): UnpackLimits {
    return { maxBytes: job.spec.limits.workspaceBytes, maxEntries: 1_000_000, maxPathLength: 4096 };
  }

  private cacheScope(job: JobRecord): CacheScope {
    return {
      tenant: job.tenant,
      repository: job.origin.repository ?? job.spec.repository ?? job.spec.checkout?.url ?? '',
      namespace: cacheNamespace(job.decision.trust),
    };
  }

  /** The protocols this job's checkout may use: the node's, and `file` for the operator's own jobs. */
  private protocols(job: JobRecord): readonly GitProtocol[] {
    return job.origin.via === 'cli' && !this.opts.protocols.includes('file')
      ? [...this.opts.protocols, 'file']
      : this.opts.protocols;
  }

  /** Mounts and fills the job's workspace; returns it and what went in. Removes it if filling fails. */
  async prepare(job: JobRecord): Promise<{ dir: string; attributes: WorkspaceAttributes }> {
    const dir = this.dirOf(job.id);
    const spec = job.spec;
    try {
      await mountTmpfs(dir, { bytes: spec.limits.workspaceBytes, mode: 0o755 });
    } catch (err) {
      throw withContext(`mounting the workspace of job ${job.id}`, err);
    }
    const attributes: WorkspaceAttributes = {};
    try {
      if (spec.checkout) {
        const r = await this.opts.mirrors.checkout({
          ...spec.checkout,
          workTree: dir,
          allowed: this.protocols(job),
        });
        attributes.checkout = { url: spec.checkout.url, commit: spec.checkout.commit, ...r };
      }
      for (const from of spec.artifactsFrom) await this.restoreArtifacts(job, from, dir);
      if (spec.artifactsFrom.length) attributes.artifactsFrom = spec.artifactsFrom.map((f) => f.name);
      if (spec.cache && spec.cache.policy !== 'push') {
        const key = await this.opts.caches.key(dir, spec.cache);
        const scope = this.cacheScope(job);
        const r = await this.opts.caches.restore(scope, key, dir, this.limits(job));
        attributes.cache = { key, namespace: scope.namespace, ...r };
      }
    } catch (err) {
      const full = await isFull(dir);
      await this.remove(job.id);
      if (!full) throw err;
      throw new UserError(
        `the job's workspace is full (resources.workspace is ${formatBytes(spec.limits.workspaceBytes)}): raise resources.workspace. ${errorMessage(err)}`,
      );
    }
    return { dir, attributes };
  }

  private async restoreArtifacts(
    job: JobRecord,
    from: JobSpec['artifactsFrom'][number],
    dir: string,
  ): Promise<void> {
    const other = await this.opts.getJob(from.jobId);
    // Only a job of the same tenant, and never an untrusted job's files into a trusted job:
    // they would run as trusted code.
    if (!other || other.tenant !== job.tenant)
      throw new UserError(`needs: job ${from.name} (${from.jobId}) is not a job of this tenant`);
    if (job.decision.trust === 'trusted' && other.decision.trust !== 'trusted')
      throw new UserError(
        `needs: job ${from.name} ran untrusted code; a trusted job cannot take its artifacts`,
      );
    const record = other.handle?.attributes.workspace?.artifacts;
    if (!record)
      throw new UserError(
        `needs: job ${from.name} kept no artifacts (it names no artifacts:paths, or they were not collected)`,
      );
    await this.opts.artifacts.restore(dir, record, from.name, this.limits(job)).catch((err: unknown) => {
      throw new UserError(`needs: ${errorMessage(err)}`);
    });
  }

  /**
   * After the job: its artifacts (when its state asks for them) and its cache. A failure to
   * keep artifacts is the job's failure (returned as `error`); a cache that cannot be saved
   * is only logged, as in GitLab CI.
   */
  async finish(
    job: JobRecord,
    succeeded: boolean,
    attributes: WorkspaceAttributes,
  ): Promise<WorkspaceAttributes> {
    const dir = this.dirOf(job.id);
    const out = { ...attributes };
    const spec = job.spec;
    const log = this.opts.logger.child({ job_id: job.id });
    const when = spec.artifacts?.when;
    if (spec.artifacts && (when === 'always' || (when === 'on_success') === succeeded)) {
      try {
        out.artifacts = await this.opts.artifacts.collect(dir, spec.artifacts, spec.name);
      } catch (err) {
        if (!(err instanceof UserError)) throw withContext(`collecting the artifacts of job ${job.id}`, err);
        out.error = `artifacts: ${err.message}`;
      }
    }
    if (spec.cache && spec.cache.policy !== 'pull' && succeeded) {
      const scope = this.cacheScope(job);
      try {
        const key = out.cache?.key ?? (await this.opts.caches.key(dir, spec.cache));
        const r = await this.opts.caches.save(scope, key, dir, spec.cache.paths, spec.limits.workspaceBytes);
        out.cacheSaved = { key, namespace: scope.namespace, bytes: r.bytes };
      } catch (err) {
        log.warn({ err: errorMessage(err) }, 'the cache could not be saved');
      }
    }
    return out;
  }

  /** Unmounts and removes the job's workspace; nothing when it is gone. */
  async remove(jobId: string): Promise<void> {
    const dir = this.dirOf(jobId);
    await unmount(dir);
    await ifExists(rmdir(dir));
  }

  /**
   * Removes the workspaces of jobs that are not `live` (a crash between a job's end and its
   * cleanup) and the artifacts past their expiry; says what it removed.
   */
  async tidy(live: (jobId: string) => boolean): Promise<{ workspaces: string[]; artifacts: number }> {
    const workspaces: string[] = [];
    for (const id of (await ifExists(readdir(this.opts.dir))) ?? []) {
      if (live(id)) continue;
      await this.remove(id);
      workspaces.push(id);
    }
    return { workspaces, artifacts: await this.artifacts.prune() };
  }
}
