/**
 * A job's output from its Pod's log, resumed without loss or duplication when the stream drops.
 *
 * The log API has no byte offset to resume from (limitBytes only caps a read), so a resumed read
 * asks for `sinceTime` with `timestamps=true`: every line comes stamped by the kubelet
 * (RFC3339Nano), and lines at or before the last one emitted are skipped. `sinceTime` is read to
 * the second, so a resumed read starts up to a second early; lines sharing the last timestamp
 * are told apart by how many of them were emitted. Only whole lines are emitted while following:
 * a line cut by the drop comes whole in the next read. When the container has ended, one last
 * read without follow gives what is left, a final line without a newline included.
 *
 * The stream is read with Node's own HTTP client (with the kubeconfig's credentials and TLS
 * applied by the client library): the library's Log pipes the response into a stream and does
 * not pass a dropped connection on, so a follower would wait forever.
 */

import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { OutputChunk } from '../../lib/follow.js';
import { sleep } from '../../lib/exec.js';
import type { Logger } from '../../observability/logger.js';
import { ClusterError, type KubeCluster } from './cluster.js';
import { CONTAINER } from './pod.js';

/** Between reads while the container has not started, or after a drop. */
const RETRY_MS = 200;

/** A kubelet timestamp made comparable as text: seconds, then nine digits of fraction. */
export function timestampKey(ts: string): string {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$/.exec(ts);
  if (!m) throw new Error(`log line timestamp "${ts}" is not RFC3339 in UTC`);
  return `${m[1]}.${(m[2] ?? '').padEnd(9, '0')}`;
}

/** Which lines have been emitted: the last timestamp, and how many lines carried it. */
export class LogPosition {
  private last = '';
  private atLast = 0;
  /** Lines of the current read at the last timestamp that were already emitted. */
  private toSkip = 0;

  /** A new read starts (from `since`): the lines at the last timestamp come again. */
  resume(): void {
    this.toSkip = this.atLast;
  }

  /** The next read's `sinceTime`, or none for the first. */
  since(): string | undefined {
    return this.last ? `${this.last.slice(0, 19)}Z` : undefined;
  }

  /** Whether a line stamped `ts` is new, recording it if so. */
  admit(ts: string): boolean {
    const key = timestampKey(ts);
    if (key < this.last) return false;
    if (key === this.last) {
      if (this.toSkip > 0) {
        this.toSkip--;
        return false;
      }
      this.atLast++;
      return true;
    }
    this.last = key;
    this.atLast = 1;
    this.toSkip = 0;
    return true;
  }
}

type Opened = { stream: IncomingMessage } | { gone: string } | { notStarted: string };

export interface FollowOptions {
  follow: boolean;
  signal?: AbortSignal;
  /** Whether the container has ended (read again after each drop). */
  ended: () => Promise<boolean>;
}

export async function* followLog(
  cluster: KubeCluster,
  where: { namespace: string; name: string },
  opts: FollowOptions,
  log: Logger,
): AsyncGenerator<OutputChunk> {
  const position = new LogPosition();
  let follow = opts.follow;
  for (;;) {
    if (opts.signal?.aborted) return;
    // Once the container has ended, the last read takes everything left, and is the last.
    if (follow && (await opts.ended())) follow = false;
    position.resume();
    let opened: Opened;
    try {
      opened = await openLog(cluster, where, { follow, since: position.since() }, opts.signal);
    } catch (err) {
      // Refused by the API server: not a drop. Not reached at all (reset, refused): read again.
      if (opts.signal?.aborted || !(err instanceof ClusterError) || err.code !== 0) throw err;
      log.info({ pod: where.name, err: err.message }, 'the log could not be read; trying again');
      await sleep(RETRY_MS);
      continue;
    }
    if ('gone' in opened) return;
    if ('notStarted' in opened) {
      if (!follow) return;
      await sleep(RETRY_MS);
      continue;
    }
    let pending = '';
    try {
      for await (const data of opened.stream) {
        const lines = (pending + (data as Buffer).toString('utf8')).split('\n');
        pending = lines.pop() ?? '';
        const text = emitted(lines, position);
        if (text) yield { stream: 'stdout', text };
      }
      if (!follow) {
        // The last read: its final line may have no newline.
        const text = pending && emitted([pending], position, '');
        if (text) yield { stream: 'stdout', text };
        return;
      }
    } catch (err) {
      if (opts.signal?.aborted) return;
      log.info(
        { pod: where.name, err: (err as Error).message },
        'the log stream dropped; resuming after the last line read',
      );
      await sleep(RETRY_MS);
    }
  }
}

/** The new lines among `lines` (each `TIMESTAMP text`), as text. */
function emitted(lines: string[], position: LogPosition, newline = '\n'): string {
  let out = '';
  for (const line of lines) {
    const space = line.indexOf(' ');
    const ts = space < 0 ? line : line.slice(0, space);
    if (position.admit(ts)) out += `${space < 0 ? '' : line.slice(space + 1)}${newline}`;
  }
  return out;
}

async function openLog(
  cluster: KubeCluster,
  { namespace, name }: { namespace: string; name: string },
  { follow, since }: { follow: boolean; since: string | undefined },
  signal: AbortSignal | undefined,
): Promise<Opened> {
  const url = new URL(`${cluster.server}/api/v1/namespaces/${namespace}/pods/${name}/log`);
  url.searchParams.set('container', CONTAINER);
  url.searchParams.set('timestamps', 'true');
  url.searchParams.set('follow', String(follow));
  if (since) url.searchParams.set('sinceTime', since);
  return cluster.call(`reading the log of pod ${namespace}/${name}`, async () => {
    const options: https.RequestOptions = {};
    await cluster.config.applyToHTTPSOptions(options);
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = (url.protocol === 'https:' ? https : http).request(
        url,
        { ...options, method: 'GET', signal },
        resolve,
      );
      req.on('error', reject);
      req.end();
    });
    if (res.statusCode === 200) return { stream: res };
    const message = await statusMessage(res);
    if (res.statusCode === 404) return { gone: message };
    if (res.statusCode === 400) return { notStarted: message };
    throw new ClusterError(message, res.statusCode ?? 0, message);
  });
}

async function statusMessage(res: IncomingMessage): Promise<string> {
  let body = '';
  for await (const c of res) body += (c as Buffer).toString('utf8');
  try {
    const m = (JSON.parse(body) as { message?: unknown }).message;
    return typeof m === 'string' ? m : body;
  } catch {
    return body || `HTTP ${res.statusCode}`;
  }
}
