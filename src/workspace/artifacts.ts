import { readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { ifExists } from '../lib/errors.js';
import { writeFileAtomic } from '../lib/fs-util.js';
import type { UnpackLimits } from '../lib/tar-read.js';
import type { JobArtifacts } from '../jobs/spec.js';
import type { WorkspaceAttributes } from '../jobs/handle.js';
import { BlobStore } from './blob-store.js';
import { packWorkspace } from './collect.js';
import { extractInto } from './extract.js';

export type ArtifactRecord = NonNullable<WorkspaceAttributes['artifacts']>;

/**
 * Files a job kept from its workspace (`artifacts.paths`), as one tar per job stored by
 * digest, given to the jobs that need it and downloadable until it expires. A job's record
 * names its tar (its handle's `workspace.artifacts`); the same files kept twice are stored once,
 * until the later expiry.
 */
export class Artifacts {
  readonly blobs: BlobStore;

  constructor(
    private readonly dir: string,
    /** The most one job may keep. */
    readonly maxBytes: number,
  ) {
    this.blobs = new BlobStore(path.join(dir, 'blobs'));
  }

  private expiryFile(digest: string): string {
    return path.join(this.dir, 'expiry', digest.replace(':', '-'));
  }

  async collect(workspace: string, spec: JobArtifacts, jobName: string): Promise<ArtifactRecord> {
    const { stream, done } = packWorkspace(
      workspace,
      spec.paths,
      this.maxBytes,
      `artifacts of job ${jobName}`,
    );
    const [{ digest }, collected] = await Promise.all([this.blobs.put(stream), done]);
    const expiresAt = Date.now() + spec.expireInMs;
    const file = this.expiryFile(digest);
    const earlier = Number((await ifExists(readFile(file, 'utf8'))) ?? 0);
    await writeFileAtomic(file, String(Math.max(earlier, expiresAt)));
    return { digest, bytes: collected.bytes, files: collected.files, expiresAt };
  }

  /** Puts a job's artifacts into another job's workspace. */
  async restore(
    workspace: string,
    record: ArtifactRecord,
    from: string,
    limits: UnpackLimits,
  ): Promise<void> {
    if (record.expiresAt < Date.now() || !(await this.blobs.has(record.digest)))
      throw new Error(`the artifacts of job ${from} expired`);
    await extractInto(workspace, this.blobs.path(record.digest), `artifacts of job ${from}`, limits);
  }

  /** Removes artifacts past their expiry; returns how many. */
  async prune(now = Date.now()): Promise<number> {
    const dir = path.join(this.dir, 'expiry');
    let n = 0;
    for (const name of (await ifExists(readdir(dir))) ?? []) {
      const until = Number(await ifExists(readFile(path.join(dir, name), 'utf8')));
      if (!(until < now)) continue;
      await this.blobs.remove(name.replace('-', ':'));
      await rm(path.join(dir, name), { force: true });
      n++;
    }
    return n;
  }
}
