import type { OutputChunk } from '../lib/follow.js';

export const MASK = '***';
/** Shorter lines of a multi-line secret are too common to mask ("-----", "}"). */
const MIN_LINE = 8;

/**
 * Replaces every secret value a job received with `***` in its output, also when the value
 * arrives split over several chunks: the end of a chunk that could be the start of a secret is
 * held back until the next chunk (or the end of the stream) says whether it is. Nothing else is
 * delayed. Multi-line values are also masked line by line, as a job may print one line of them.
 */
export class OutputMasker {
  private readonly values: string[];
  private readonly pattern: RegExp | undefined;
  private readonly held = new Map<OutputChunk['stream'], string>();

  constructor(secrets: Iterable<string>) {
    const values = new Set<string>();
    for (const v of secrets) {
      if (!v) continue;
      values.add(v);
      for (const line of v.split(/\r?\n/)) if (line.length >= MIN_LINE) values.add(line);
    }
    // Longest first: where two values start at one place, the longer is masked whole.
    this.values = [...values].sort((a, b) => b.length - a.length);
    this.pattern = this.values.length
      ? new RegExp(this.values.map((v) => v.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g')
      : undefined;
  }

  get active(): boolean {
    return this.pattern !== undefined;
  }

  /** The chunk with secrets masked, less any tail held back for the next chunk. */
  push(chunk: OutputChunk): OutputChunk[] {
    if (!this.pattern) return [chunk];
    const text = (this.held.get(chunk.stream) ?? '') + chunk.text;
    const { out, rest } = this.scan(text, false);
    this.held.set(chunk.stream, rest);
    return out ? [{ stream: chunk.stream, text: out }] : [];
  }

  /** What is still held back, at the end of the output. */
  flush(): OutputChunk[] {
    const out: OutputChunk[] = [];
    for (const [stream, text] of this.held) if (text) out.push({ stream, text: this.scan(text, true).out });
    this.held.clear();
    return out;
  }

  /**
   * Masks `text` as it would be masked as part of the whole output (at each position the
   * longest value that matches there), up to the first position whose outcome depends on text
   * not seen yet: a value longer than what is left could still match there. That rest is
   * returned to be held back, unless this is the end.
   */
  private scan(text: string, atEnd: boolean): { out: string; rest: string } {
    const re = this.pattern as RegExp;
    const longest = (this.values[0] as string).length;
    const settled = text.length - longest; // at positions up to here every value can be judged
    let out = '';
    let j = 0;
    while (j < text.length) {
      if (!atEnd && j > settled && this.undecided(text, j)) break;
      re.lastIndex = j;
      const m = re.exec(text);
      if (m?.index === j) {
        out += MASK;
        j += m[0].length;
        continue;
      }
      const next = Math.min(m ? m.index : text.length, j <= settled ? settled + 1 : j + 1);
      out += text.slice(j, next);
      j = next;
    }
    return { out, rest: text.slice(j) };
  }

  /** Whether a value longer than the rest of `text` from `j` starts with that rest. */
  private undecided(text: string, j: number): boolean {
    const rest = text.slice(j);
    return this.values.some((v) => v.length > rest.length && v.startsWith(rest));
  }
}
