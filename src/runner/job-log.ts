import { constants } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { StatePaths } from '../lib/state-paths.js';
import { ifExists } from '../lib/errors.js';
import type { Logger } from '../observability/logger.js';
import type { OutputChunk } from '../lib/follow.js';
import { writeFileAtomic } from '../lib/fs-util.js';
import type { JobRecord } from '../store/store.js';
import { followFile, k8sFileDecoder } from '../lib/follow.js';

export const JOB_LOG_MAX_BYTES = 16 * 1024 * 1024;
const FLUSH_BYTES = 64 * 1024;

export function jobLogPath(paths: StatePaths, jobId: string): string {
  return path.join(paths.logs, `${jobId}.log`);
}

/** Beside each job's log, what a log shipper needs to label its lines (the file name gives the id). */
export function jobLogMetadataPath(paths: StatePaths, jobId: string): string {
  return path.join(paths.logs, `${jobId}.json`);
}

/**
 * The job's metadata file: written once, when its log starts, for Fluentd and Fluent Bit to
 * join on `job_id` (see examples/logging). Bounded fields only: nothing the job printed. Not
 * fsynced, like the log beside it (an fsync per job cost ~2 ms of the disk's time on the
 * job's path): after a power loss both may be short, and the job's record is the store's.
 */
export async function writeJobLogMetadata(paths: StatePaths, job: JobRecord): Promise<void> {
  const meta = {
    job_id: job.id,
    job_name: job.name,
    tenant: job.tenant,
    runtime: job.runtime,
    trust: job.decision.trust,
    pipeline: job.origin.pipeline ?? null,
    repository: job.origin.repository ?? job.spec.repository ?? null,
    commit: job.origin.commit ?? job.spec.checkout?.commit ?? null,
    created_at: new Date(job.createdAt).toISOString(),
  };
  await writeFileAtomic(jobLogMetadataPath(paths, job.id), `${JSON.stringify(meta)}\n`, { durable: false });
}

/** CRI lines for one chunk of output. */
export function criLines(chunk: OutputChunk, at: Date = new Date()): string {
  const ts = at.toISOString();
  const parts = chunk.text.split('\n');
  const partial = parts.pop() as string;
  let out = '';
  for (const line of parts) out += `${ts} ${chunk.stream} F ${line}\n`;
  if (partial) out += `${ts} ${chunk.stream} P ${partial}\n`;
  return out;
}

/**
 * A job's stored output, the one every reader (API, CLI, log streams) reads: `logs/<job>.log`
 * in the state directory, in the CRI log format Kubernetes and conmon write (`<time> <stream>
 * <F|P> <text>`, P for a partial line: what Fluent Bit's and Fluentd's `cri` parsers read),
 * mode 0600, size-capped, with `logs/<job>.json` beside it. Boxcar writes it from the sandbox's own log, with the
 * job's secrets masked; the sandbox's log goes with the sandbox.
 */
export class JobLogWriter {
  private pending = '';
  private written = 0;
  private full = false;
  private flushing: Promise<void> = Promise.resolve();
  private scheduled = false;
  private failed = false;

  /** Opened at the first output: most jobs of a busy node print little or nothing. */
  private fh: Promise<FileHandle> | undefined;

  private constructor(
    private readonly file: string,
    private readonly log: Logger,
    private readonly maxBytes: number,
  ) {}

  /** Starts the job's stored log afresh (a new attempt, or a re-attach that replays the sandbox's log). */
  static async create(file: string, log: Logger, maxBytes = JOB_LOG_MAX_BYTES): Promise<JobLogWriter> {
    await ifExists(unlink(file));
    return new JobLogWriter(file, log, maxBytes);
  }

  /** Queues a chunk; writes are batched (one write per burst of output, not per line). */
  write(chunk: OutputChunk): void {
    if (this.full || this.failed) return;
    let lines = criLines(chunk);
    const size = Buffer.byteLength(lines);
    if (this.written + size > this.maxBytes) {
      this.full = true;
      lines = criLines({
        stream: 'stderr',
        text: `[boxcar: output exceeded the ${this.maxBytes}-byte log cap; the rest was dropped]\n`,
      });
    }
    this.written += size;
    this.pending += lines;
    if (this.pending.length >= FLUSH_BYTES) this.flushNow();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flushNow());
    }
  }

  private flushNow(): void {
    this.scheduled = false;
    const text = this.pending;
    this.pending = '';
    if (!text) return;
    this.flushing = this.flushing.then(async () => {
      if (this.failed) return;
      try {
        this.fh ??= open(this.file, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
        await (await this.fh).write(text);
      } catch (err) {
        // The job goes on and its status is recorded; only its stored output is short.
        this.failed = true;
        this.log.error({ err, file: this.file }, "writing the job's log failed; its output is incomplete");
      }
    });
  }

  /** Writes what is queued and closes the file. */
  async close(): Promise<void> {
    this.flushNow();
    await this.flushing;
    await (await this.fh?.catch(() => undefined))?.close(); // a failed open was logged at the write
  }
}

/** A job's stored output: all of it so far, or followed until `isDone`. */
export function readJobLog(
  file: string,
  opts: { follow: boolean; isDone: () => Promise<boolean>; signal?: AbortSignal },
): AsyncIterable<OutputChunk> {
  return followFile(file, k8sFileDecoder, opts);
}
