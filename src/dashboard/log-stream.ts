import { open } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Boxcar } from '../boxcar.js';
import { ifExists } from '../lib/errors.js';
import { followFile, k8sFileDecoder, type LogDecoder } from '../lib/follow.js';
import { isTerminal } from '../jobs/states.js';
import { jobLogPath } from '../runner/job-log.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { JobRecord } from '../store/store.js';
import { LogParser } from './log-lines.js';
import { openEventStream } from './sse.js';

/** How much of the end of a stored log the page starts with; the whole log is a download. */
export const TAIL_BYTES = 512 * 1024;

/**
 * Where to start reading a stored log to show its last `tailBytes`: the start of the first whole
 * CRI line in that window (0 for a log that small).
 */
export async function tailOffset(file: string, tailBytes: number): Promise<number> {
  const fh = await ifExists(open(file, 'r'));
  if (!fh) return 0;
  try {
    const size = (await fh.stat()).size;
    if (size <= tailBytes) return 0;
    let pos = size - tailBytes;
    const buf = Buffer.alloc(16 * 1024);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) return size;
      const nl = buf.subarray(0, bytesRead).indexOf(0x0a);
      if (nl >= 0) return pos + nl + 1;
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

const newlines = (text: string) => {
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return n;
};

/**
 * The CRI decoder, but the first `skip` bytes (whole lines) are only counted, not returned:
 * the page numbers the lines it shows as they are numbered in the whole log.
 */
function skippingDecoder(skip: number, counted: { lines: number }): () => LogDecoder {
  let first = true;
  return () => {
    const inner = k8sFileDecoder();
    let left = first ? skip : 0; // after a truncation the file starts over: nothing to skip
    first = false;
    return {
      push(bytes) {
        if (left === 0) return inner.push(bytes);
        const head = bytes.subarray(0, left);
        left -= head.length;
        for (const c of inner.push(head)) counted.lines += newlines(c.text);
        return bytes.length > head.length ? inner.push(bytes.subarray(head.length)) : [];
      },
    };
  };
}

/**
 * A job's log for its page, as Server-Sent Events: `skipped` (lines and bytes before the tail),
 * then batches of LogEvents as the job prints, then `end` with the job's final state.
 */
export async function streamJobLog(
  box: Boxcar,
  scheduler: Scheduler,
  job: JobRecord,
  req: IncomingMessage,
  res: ServerResponse,
  closing: AbortSignal,
  tailBytes = TAIL_BYTES,
): Promise<void> {
  const file = jobLogPath(box.paths, job.id);
  const stream = openEventStream(req, res, closing);
  const skip = await tailOffset(file, tailBytes);
  const counted = { lines: 0 };
  let current = job;
  const ended = async () => {
    if (!isTerminal(current.state)) current = (await box.store.getJob(job.id)) ?? current;
    return isTerminal(current.state);
  };
  let parser: LogParser | undefined;
  for await (const chunk of followFile(file, skippingDecoder(skip, counted), {
    follow: !isTerminal(job.state),
    isDone: ended,
    signal: stream.gone,
  })) {
    if (!parser) {
      parser = new LogParser(counted.lines + 1);
      if (skip) await stream.send({ lines: counted.lines, bytes: skip }, 'skipped');
    }
    const events = parser.push(chunk.text);
    if (events.length) await stream.send(events);
  }
  const last = parser?.finish() ?? [];
  if (last.length) await stream.send(last);
  // The stored log is complete before the job's final state is recorded.
  while (!stream.gone.aborted && !(await ended())) await scheduler.nextChange(job.id, 1000);
  await stream.send(
    {
      state: current.state,
      exitCode: current.exitCode,
      error: current.error,
      durationMs: current.durationMs,
    },
    'end',
  );
  stream.end();
}
