import type { OutputChunk } from '../lib/follow.js';

/**
 * Keeps the first `limitBytes` of a job's combined output for its result (the full, size-capped
 * log stays in the log file), passing every chunk on live.
 */
export class OutputCapture {
  private readonly parts: string[] = [];
  private bytes = 0;
  truncated = false;

  constructor(
    private readonly limitBytes: number,
    private readonly onChunk?: (chunk: OutputChunk) => void,
  ) {}

  add(chunk: OutputChunk): void {
    this.onChunk?.(chunk);
    if (this.truncated) return;
    const size = Buffer.byteLength(chunk.text);
    if (this.bytes + size <= this.limitBytes) {
      this.parts.push(chunk.text);
      this.bytes += size;
      return;
    }
    const room = this.limitBytes - this.bytes;
    this.parts.push(Buffer.from(chunk.text).subarray(0, room).toString('utf8'));
    this.bytes = this.limitBytes;
    this.truncated = true;
  }

  text(): string {
    const body = this.parts.join('');
    return this.truncated
      ? `${body}\n[boxcar: output truncated at ${this.limitBytes} bytes; the full log is in the job's log file]\n`
      : body;
  }
}
