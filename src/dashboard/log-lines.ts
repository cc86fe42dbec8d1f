/* eslint-disable no-control-regex -- matching terminal escape sequences is what this module is for */
/**
 * A job's output as a terminal would show it, line by line, for the log page: ANSI SGR colours
 * and styles become spans (other escape sequences are dropped), a line rewritten with `\r`
 * shows only its last version, and GitLab's `section_start`/`section_end` markers and GitHub's
 * `::group::`/`::endgroup::` become collapsible sections. The browser builds the page from
 * these events with textContent, so no byte of the output is ever parsed as markup.
 */

/** A run of text in one style: `c` CSS classes, `fg`/`bg` colours beyond the 16 named ones. */
export interface Span {
  t: string;
  c?: string;
  fg?: string;
  bg?: string;
}

export type LogEvent =
  /** Line `n`; `p` while it is still being printed (a later event for the same `n` replaces it). */
  | { k: 'line'; n: number; s: Span[]; p?: 1 }
  /** A section whose header is line `n`; lines go into it until its `close`. */
  | { k: 'open'; n: number; s: Span[]; collapsed: boolean }
  | { k: 'close' };

interface Style {
  bold: boolean;
  dim: boolean;
  italic: boolean;
  underline: boolean;
  /** `f3` (one of the 16 palette classes) or `#rrggbb`. */
  fg?: string;
  bg?: string;
}

const PLAIN: Style = { bold: false, dim: false, italic: false, underline: false };
const CUBE = [0, 95, 135, 175, 215, 255];
const hex = (r: number, g: number, b: number) =>
  `#${[r, g, b].map((v) => Math.max(0, Math.min(255, v)).toString(16).padStart(2, '0')).join('')}`;

/** An xterm 256-colour index: the 16 palette colours by class (themeable), the rest as RGB. */
function color256(i: number): string {
  if (i < 16) return `${i}`;
  if (i < 232) {
    const c = i - 16;
    return hex(
      CUBE[Math.floor(c / 36)] as number,
      CUBE[Math.floor(c / 6) % 6] as number,
      CUBE[c % 6] as number,
    );
  }
  const g = 8 + 10 * (i - 232);
  return hex(g, g, g);
}

/** Applies one SGR sequence's parameters (`1;31`, `38;5;208`, `38;2;r;g;b`). */
function applySgr(style: Style, params: string): Style {
  const s = { ...style };
  const codes = params === '' ? [0] : params.split(/[;:]/).map((p) => (p === '' ? 0 : Number(p)));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i] as number;
    if (c === 0) Object.assign(s, PLAIN, { fg: undefined, bg: undefined });
    else if (c === 1) s.bold = true;
    else if (c === 2) s.dim = true;
    else if (c === 3) s.italic = true;
    else if (c === 4) s.underline = true;
    else if (c === 22) s.bold = s.dim = false;
    else if (c === 23) s.italic = false;
    else if (c === 24) s.underline = false;
    else if (c >= 30 && c <= 37) s.fg = `${c - 30}`;
    else if (c >= 90 && c <= 97) s.fg = `${c - 90 + 8}`;
    else if (c === 39) s.fg = undefined;
    else if (c >= 40 && c <= 47) s.bg = `${c - 40}`;
    else if (c >= 100 && c <= 107) s.bg = `${c - 100 + 8}`;
    else if (c === 49) s.bg = undefined;
    else if (c === 38 || c === 48) {
      const mode = codes[i + 1];
      let color: string | undefined;
      if (mode === 5 && codes[i + 2] !== undefined) {
        color = color256(codes[i + 2] as number);
        i += 2;
      } else if (mode === 2 && codes[i + 4] !== undefined) {
        color = hex(codes[i + 2] as number, codes[i + 3] as number, codes[i + 4] as number);
        i += 4;
      } else i = codes.length; // malformed: ignore the rest, as terminals do
      if (c === 38) s.fg = color;
      else s.bg = color;
    }
  }
  return s;
}

function spanOf(t: string, s: Style): Span {
  const classes = [
    s.bold && 'b',
    s.dim && 'd',
    s.italic && 'i',
    s.underline && 'u',
    s.fg && !s.fg.startsWith('#') && `f${s.fg}`,
    s.bg && !s.bg.startsWith('#') && `g${s.bg}`,
  ].filter(Boolean);
  const span: Span = { t };
  if (classes.length) span.c = classes.join(' ');
  if (s.fg?.startsWith('#')) span.fg = s.fg;
  if (s.bg?.startsWith('#')) span.bg = s.bg;
  return span;
}

/** A CSI sequence: ESC [ parameters intermediates final. */
const CSI = /^\x1b\[([0-?]*)[ -/]*([@-~])/;
/** An OSC sequence (titles, hyperlinks), ended by BEL or ST. */
const OSC = /^\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?/;

/**
 * One line's spans, from the style it starts in; also the style it ends in. A `\r` inside the
 * line starts it over (a progress bar's last state is what stays on a terminal).
 */
export function renderLine(raw: string, start: Style): { spans: Span[]; style: Style } {
  let style = start;
  let spans: Span[] = [];
  let text = '';
  const cut = () => {
    if (text) spans.push(spanOf(text, style));
    text = '';
  };
  const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
  for (let i = 0; i < line.length;) {
    const ch = line[i] as string;
    if (ch === '\x1b') {
      const rest = line.slice(i, i + 64);
      const csi = CSI.exec(rest);
      if (csi) {
        if (csi[2] === 'm') {
          cut();
          style = applySgr(style, csi[1] as string);
        }
        i += csi[0].length;
        continue;
      }
      const osc = OSC.exec(line.slice(i));
      i += osc ? osc[0].length : 2; // an unknown ESC x: both dropped
      continue;
    }
    if (ch === '\r') {
      text = '';
      spans = [];
    } else if (ch === '\t' || ch >= ' ') {
      if (ch !== '\x7f') text += ch;
    }
    i++;
  }
  cut();
  return { spans: mergeSpans(spans), style };
}

function mergeSpans(spans: Span[]): Span[] {
  const out: Span[] = [];
  for (const s of spans) {
    const last = out.at(-1);
    if (last && last.c === s.c && last.fg === s.fg && last.bg === s.bg) last.t += s.t;
    else out.push(s);
  }
  return out;
}

const SECTION_START =
  /^(?:\x1b\[0K)?section_start:\d+:([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?\r(?:\x1b\[0K)?(.*)$/s;
const SECTION_END = /^(?:\x1b\[0K)?section_end:\d+:([A-Za-z0-9_.-]+)\r?(?:\x1b\[0K)?\s*$/;
const GROUP = /^::group::(.*)$/s;
const END_GROUP = /^::endgroup::\s*$/;
/** A line still being printed that may yet turn out to be a marker must not be collapsed. */
const MARKER_PREFIX = /^(?:\x1b\[0K)?section_(?:start|end):/;
/** The most of an unfinished line kept before it is shown as a line of its own. */
const MAX_PENDING = 64 * 1024;

/** Parses a job's output as it arrives; `push` returns what changed on the page. */
export class LogParser {
  private pending = '';
  private style: Style = PLAIN;
  private next: number;
  /** Open sections by name (GitHub's groups as `::group`), innermost last. */
  private readonly open: string[] = [];

  constructor(firstLine = 1) {
    this.next = firstLine;
  }

  push(text: string): LogEvent[] {
    const events: LogEvent[] = [];
    const parts = (this.pending + text).split('\n');
    this.pending = parts.pop() as string;
    for (const raw of parts) this.complete(raw, events);
    if (this.pending.length > MAX_PENDING) {
      this.complete(this.pending, events);
      this.pending = '';
    }
    if (this.pending) {
      // Fold what a `\r` already overwrote into the style, so a progress bar holds one version.
      const cr = this.pending.lastIndexOf('\r', this.pending.length - 2);
      if (cr >= 0 && !MARKER_PREFIX.test(this.pending)) {
        this.style = renderLine(this.pending.slice(0, cr), this.style).style;
        this.pending = this.pending.slice(cr + 1);
      }
      const { spans } = renderLine(this.pending, this.style);
      events.push({ k: 'line', n: this.next, s: spans, p: 1 });
    }
    return events;
  }

  /** The end of the output: an unfinished last line is shown as it is. */
  finish(): LogEvent[] {
    const events: LogEvent[] = [];
    if (this.pending) this.complete(this.pending, events);
    this.pending = '';
    return events;
  }

  private complete(raw: string, events: LogEvent[]): void {
    const start = SECTION_START.exec(raw) ?? GROUP.exec(raw);
    if (start) {
      const gitlab = start.length === 4;
      const { spans, style } = renderLine((gitlab ? start[3] : start[1]) ?? '', this.style);
      this.style = style;
      // GitLab sections are open unless they say collapsed; GitHub's groups start folded.
      const collapsed = gitlab ? /(^|,)collapsed=true(,|$)/.test(start[2] ?? '') : true;
      this.open.push(gitlab ? `s:${start[1]}` : '::group');
      events.push({
        k: 'open',
        n: this.next++,
        s: spans.length ? spans : [{ t: gitlab ? (start[1] as string) : '' }],
        collapsed,
      });
      return;
    }
    const end = SECTION_END.exec(raw);
    const name = end ? `s:${end[1]}` : END_GROUP.test(raw) ? '::group' : undefined;
    if (name !== undefined) {
      // Closes it and any section left open inside it; an end with no start is dropped.
      const at = this.open.lastIndexOf(name);
      if (at >= 0) events.push(...this.open.splice(at).map((): LogEvent => ({ k: 'close' })));
      return;
    }
    const { spans, style } = renderLine(raw, this.style);
    this.style = style;
    events.push({ k: 'line', n: this.next++, s: spans });
  }
}
