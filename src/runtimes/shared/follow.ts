import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { OutputChunk } from '../runtime.js';
import { ChangeWatcher } from './watch.js';

/**
 * Reads a job's log file from the start, optionally following it until `isDone()` and no more
 * data: either the "k8s-file" format conmon writes (`<RFC3339 time> <stdout|stderr> <F|P>
 * <text>`, P = partial line), or raw bytes (WASM jobs write their output straight to the file).
 */
export type LogFormat = 'k8s-file' | 'raw';
export function parseK8sLogLine(line: string): OutputChunk | undefined {
  const a = line.indexOf(' ');
  const b = line.indexOf(' ', a + 1);
  const c = line.indexOf(' ', b + 1);
  if (a < 0 || b < 0) return undefined;
  const stream = line.slice(a + 1, b);
  if (stream !== 'stdout' && stream !== 'stderr') return undefined;
  const tag = c < 0 ? line.slice(b + 1) : line.slice(b + 1, c);
  const text = c < 0 ? '' : line.slice(c + 1);
  return { stream, text: tag.startsWith('P') ? text : `${text}\n` };
}

export interface FollowOptions {
  follow: boolean;
  isDone: () => Promise<boolean>;
  signal?: AbortSignal;
}

const IDLE_POLL_MS = 250;

export async function* followFile(
  file: string,
  format: LogFormat,
  opts: FollowOptions,
): AsyncGenerator<OutputChunk> {
  let fh: FileHandle | undefined;
  let changes: ChangeWatcher | undefined;
  let pos = 0;
  let pending = '';
  const buf = Buffer.alloc(64 * 1024);
  try {
    for (;;) {
      if (opts.signal?.aborted) return;
      if (!fh) {
        try {
          // Arm the watch before opening, so a write between the two is not missed.
          const armed = opts.follow ? new ChangeWatcher(file) : undefined;
          fh = await open(file, 'r');
          changes?.close();
          changes = armed;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
      let n = 0;
      if (fh) {
        const size = (await fh.stat()).size;
        if (size < pos) {
          // conmon truncates the file when it reaches its size cap; continue from the top.
          pos = 0;
          pending = '';
          yield {
            stream: 'stderr',
            text: '[boxcar: output exceeded the log size cap; earlier lines dropped]\n',
          };
        }
        ({ bytesRead: n } = await fh.read(buf, 0, buf.length, pos));
        pos += n;
      }
      if (n > 0 && format === 'raw') {
        yield { stream: 'stdout', text: buf.toString('utf8', 0, n) };
        continue;
      }
      if (n > 0) {
        pending += buf.toString('utf8', 0, n);
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        for (const line of lines) {
          const chunk = parseK8sLogLine(line);
          if (chunk) yield chunk;
        }
        continue;
      }
      if (!opts.follow) return;
      // Check "done" before the final read so no line written just before exit is lost.
      if (await opts.isDone()) {
        const { bytesRead } = fh ? await fh.read(buf, 0, buf.length, pos) : { bytesRead: 0 };
        if (bytesRead === 0) return;
        continue;
      }
      // Watch the file itself once it exists (the shared log folder would wake every follower).
      changes ??= new ChangeWatcher(path.dirname(file));
      await changes.wait(IDLE_POLL_MS, opts.signal);
    }
  } finally {
    changes?.close();
    await fh?.close();
  }
}
