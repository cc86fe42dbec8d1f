import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { ifExists } from './errors.js';
import { ChangeWatcher } from './watch.js';

/** A piece of a job's output, from one of its streams. */
export interface OutputChunk {
  stream: 'stdout' | 'stderr';
  text: string;
}

export interface LogDecoder {
  push(bytes: Buffer): OutputChunk[];
}

/** conmon's "k8s-file" lines: `<RFC3339 time> <stdout|stderr> <F|P> <text>`, P = partial line. */
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

export function k8sFileDecoder(): LogDecoder {
  const text = new StringDecoder('utf8');
  let pending = '';
  return {
    push(bytes) {
      const lines = (pending + text.write(bytes)).split('\n');
      pending = lines.pop() ?? '';
      // One chunk per run of lines of a stream, not one per line: a read of short lines would
      // otherwise become thousands of objects held while a slow reader catches up.
      const out: OutputChunk[] = [];
      for (const line of lines) {
        const c = parseK8sLogLine(line);
        if (!c) continue;
        const last = out.at(-1);
        if (last?.stream === c.stream) last.text += c.text;
        else out.push(c);
      }
      return out;
    },
  };
}

export function rawDecoder(): LogDecoder {
  const text = new StringDecoder('utf8');
  return {
    push(bytes) {
      const s = text.write(bytes);
      return s ? [{ stream: 'stdout', text: s }] : [];
    },
  };
}

export interface FollowOptions {
  follow: boolean;
  isDone: () => Promise<boolean>;
  signal?: AbortSignal;
  /** The caller saw the job end: drain and stop (see `OutputOptions.ended`). */
  ended?: AbortSignal;
}

/** How often a follower looks for the end by itself, when nobody will tell it. */
const IDLE_POLL_MS = 250;
/** When the end will be signalled, polling only covers a filesystem whose inotify is silent. */
const SIGNALLED_POLL_MS = 5000;
const READ_BYTES = 64 * 1024;

/**
 * Reads a job's log file from the start, optionally following it until `isDone()` and no more
 * data. How its bytes become output is the decoder's business: the "k8s-file" format conmon
 * writes, raw bytes (WASM jobs write their output straight to the file), or a microVM agent's
 * frames. A decoder keeps partial records across reads.
 */
export async function* followFile(
  file: string,
  makeDecoder: () => LogDecoder,
  opts: FollowOptions,
): AsyncGenerator<OutputChunk> {
  let fh: FileHandle | undefined;
  let changes: ChangeWatcher | undefined;
  let pos = 0;
  let decoder = makeDecoder();
  const ended = opts.ended;
  const wake = ended && opts.signal ? AbortSignal.any([ended, opts.signal]) : (ended ?? opts.signal);
  try {
    for (;;) {
      if (opts.signal?.aborted) return;
      if (!fh) {
        // Arm the watch before opening, so a write between the two is not missed.
        const armed = opts.follow ? new ChangeWatcher(file) : undefined;
        fh = await ifExists(open(file, 'r'));
        if (fh) {
          changes?.close();
          changes = armed;
        } else armed?.close();
      }
      if (fh) {
        const size = (await fh.stat()).size;
        if (size < pos) {
          // conmon truncates the file when it reaches its size cap; continue from the top.
          pos = 0;
          decoder = makeDecoder();
          yield {
            stream: 'stderr',
            text: '[boxcar: output exceeded the log size cap; earlier lines dropped]\n',
          };
        }
        // A buffer only as large as what is there to read: a thousand idle followers hold none.
        const want = Math.min(READ_BYTES, size - pos);
        if (want > 0) {
          const buf = Buffer.allocUnsafe(want);
          const { bytesRead: n } = await fh.read(buf, 0, want, pos);
          pos += n;
          if (n > 0) {
            yield* decoder.push(buf.subarray(0, n));
            continue;
          }
        }
      }
      if (!opts.follow) return;
      // Check "done" before the final read so no line written just before exit is lost.
      if (ended?.aborted || (await opts.isDone())) {
        if (!fh || (await fh.stat()).size <= pos) return;
        continue;
      }
      // Watch the file itself once it exists (the shared log folder would wake every follower).
      changes ??= new ChangeWatcher(path.dirname(file));
      await changes.wait(ended ? SIGNALLED_POLL_MS : IDLE_POLL_MS, wake);
    }
  } finally {
    changes?.close();
    await fh?.close();
  }
}
