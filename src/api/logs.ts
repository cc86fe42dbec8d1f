import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Boxcar } from '../boxcar.js';
import { isTerminal } from '../jobs/states.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { JobRecord } from '../store/store.js';
import { jobView } from './job-view.js';

/**
 * A job's output from its log file, through its runtime driver (which knows the file's format):
 * all of it so far, or followed live as Server-Sent Events (`data:` one chunk as JSON
 * `{stream, text}`; `event: end` with the finished job). Logs live on the node that ran the job.
 */
const POLL_MS = 250;

export async function readLogs(box: Boxcar, job: JobRecord): Promise<string> {
  if (!job.handle) return '';
  let text = '';
  for await (const chunk of box.runtimes.get(job.handle.runtime).output(job.handle, { follow: false }))
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
  const refresh = async () => (await box.store.getJob(job.id)) ?? job;
  let current = job;
  // Until the node that takes it has a sandbox for it.
  while (!current.handle && !isTerminal(current.state) && !gone.signal.aborted) {
    await scheduler.nextChange(job.id, POLL_MS);
    current = await refresh();
  }
  if (current.handle && !gone.signal.aborted) {
    const driver = box.runtimes.get(current.handle.runtime);
    const chunks = driver.output(current.handle, { follow: !isTerminal(current.state), signal: gone.signal });
    for await (const chunk of chunks) res.write(`data: ${JSON.stringify(chunk)}\n\n`);
  }
  // The output ends when the process does; the job's record follows a moment later.
  while (!isTerminal(current.state) && !gone.signal.aborted) {
    await scheduler.nextChange(job.id, POLL_MS);
    current = await refresh();
  }
  if (!gone.signal.aborted) res.write(`event: end\ndata: ${JSON.stringify(jobView(current))}\n\n`);
  res.end();
}
