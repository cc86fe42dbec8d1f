import type { OutputChunk } from '../../lib/follow.js';
import type { OutputOptions } from '../runtime.js';
import { rawDecoder } from '../../lib/follow.js';

/**
 * A WASM job's output, held in memory from its first byte until its sandbox is destroyed, up to
 * `maxBytes` (then a line saying it was cut): what a file under sandboxes/ was, without its
 * open, writes, reads, watch and removal on every job. A worker ends with the Boxcar process
 * that holds this (a WASM job never outlives it), so nothing is lost that a file would keep.
 */
export class OutputBuffer {
  private readonly chunks: Buffer[] = [];
  private bytes = 0;
  private ended = false;
  private waiting: Array<() => void> = [];

  constructor(private readonly maxBytes: number) {}

  private wake(): void {
    for (const w of this.waiting.splice(0)) w();
  }

  /** Keeps a chunk; false once the buffer is full (the rest is dropped: the job must be stopped). */
  push(chunk: Buffer): boolean {
    if (this.ended) return false;
    if (this.bytes >= this.maxBytes) return false;
    const kept = chunk.subarray(0, this.maxBytes - this.bytes);
    this.chunks.push(Buffer.from(kept)); // the caller's buffer may be reused
    this.bytes += kept.length;
    if (this.bytes >= this.maxBytes)
      this.chunks.push(
        Buffer.from(
          `\n[boxcar: the job wrote more than ${this.maxBytes / 2 ** 20} MiB of output: stopped]\n`,
        ),
      );
    this.wake();
    return this.bytes < this.maxBytes;
  }

  /** Adds Boxcar's own last words (a trap's message), past the cap if need be, and ends it. */
  end(last?: string): void {
    if (this.ended) return;
    if (last) this.chunks.push(Buffer.from(last));
    this.ended = true;
    this.wake();
  }

  /** The output from its start; with `follow`, until it ends, `signal` stops it or `ended` is told. */
  async *read(opts: OutputOptions): AsyncGenerator<OutputChunk> {
    const decoder = rawDecoder();
    const stops = [opts.signal, opts.ended].filter((s): s is AbortSignal => s !== undefined);
    let next = 0;
    for (;;) {
      while (next < this.chunks.length) yield* decoder.push(this.chunks[next++] as Buffer);
      if (!opts.follow || this.ended || stops.some((s) => s.aborted)) return;
      await new Promise<void>((resolve) => {
        const done = () => {
          for (const s of stops) s.removeEventListener('abort', done);
          resolve();
        };
        this.waiting.push(done);
        for (const s of stops) s.addEventListener('abort', done, { once: true });
      });
    }
  }
}
