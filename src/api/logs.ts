/**
 * A job's output from its stored log (masked, CRI format): all of it so far, or followed live
 * as Server-Sent Events (`data:` one chunk as JSON `{stream, text}`; `event: end` with the
 * finished job). A stream waits for a slow client instead of buffering for it, so a client
 * that never reads holds at most one read of the log in this process. Logs live on the node
 * that ran the job.
 */

import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Boxcar } from '../boxcar.js';
import { jobLogPath, readJobLog } from '../runner/job-log.js';
import { isTerminal } from '../jobs/states.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { JobRecord } from '../store/store.js';
import { jobView } from './job-view.js';

export async function readLogs(box: Boxcar, job: JobRecord): Promise<string> {
  let text = '';
  for await (const chunk of readJobLog(jobLogPath(box.paths, job.id), {
    follow: false,
    isDone: async () => true,
  }))
    text += chunk.text;
  return text;
}

export async function streamLogs(
  box: Boxcar,
  scheduler: Scheduler,
  job: JobRecord,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const gone = new AbortController();
  req.on('close', () => gone.abort());
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
  });
  res.flushHeaders(); // the client knows the stream is open before the job prints anything
  let current = job;
  const ended = async () => {
    if (!isTerminal(current.state)) current = (await box.store.getJob(job.id)) ?? current;
    return isTerminal(current.state);
  };
  const send = async (event: string) => {
    if (res.write(event)) return;
    // The client reads slower than the job prints: wait for it rather than buffer for it.
    try {
      await once(res, 'drain', { signal: gone.signal });
    } catch (err) {
      if (!gone.signal.aborted) throw err; // the client went away: nothing more to send
    }
  };
  const chunks = readJobLog(jobLogPath(box.paths, job.id), {
    follow: !isTerminal(job.state),
    isDone: ended,
    signal: gone.signal,
  });
  for await (const chunk of chunks) {
    await send(`data: ${JSON.stringify(chunk)}\n\n`);
    if (gone.signal.aborted) break;
  }
  // The stored log is complete before the job's final state is recorded.
  while (!gone.signal.aborted && !(await ended())) await scheduler.nextChange(job.id, 1000);
  if (!gone.signal.aborted) await send(`event: end\ndata: ${JSON.stringify(jobView(current))}\n\n`);
  res.end();
}
