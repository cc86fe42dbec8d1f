/**
 * A job's live log (runs in the browser). The server parses the output into lines, spans and
 * sections (log-lines.ts); this builds them with textContent only, so no byte of a job's
 * output is ever read as markup.
 */
import type { LogEvent, Span } from '../log-lines.js';

const root = document.getElementById('log');
const stateEl = document.getElementById('job-state');
const note = document.getElementById('log-note');

function spans(target: HTMLElement, list: Span[]): void {
  target.replaceChildren(
    ...list.map((s) => {
      if (!s.c && !s.fg && !s.bg) return document.createTextNode(s.t);
      const el = document.createElement('span');
      el.textContent = s.t;
      if (s.c) el.className = s.c;
      // 256-colour and true-colour values; CSSOM assignments are not inline style for the CSP.
      if (s.fg) el.style.color = s.fg;
      if (s.bg) el.style.backgroundColor = s.bg;
      return el;
    }),
  );
}

function lineElement(n: number, list: Span[]): HTMLElement {
  const line = document.createElement('div');
  line.className = 'line';
  line.id = `L${n}`;
  const a = document.createElement('a');
  a.className = 'ln';
  a.href = `#L${n}`;
  a.textContent = String(n);
  const text = document.createElement('span');
  text.className = 't';
  spans(text, list);
  line.append(a, text);
  return line;
}

if (root) {
  const stack: HTMLElement[] = [root];
  const lines = new Map<number, HTMLElement>();
  let highlighted: HTMLElement | undefined;
  const atBottom = () => root.scrollHeight - root.scrollTop - root.clientHeight < 40;
  /** Scrolls to the line in the address (#L12) once it has arrived. */
  const showTarget = () => {
    const m = /^#L(\d+)$/.exec(location.hash);
    const el = m && lines.get(Number(m[1]));
    if (!el || el === highlighted) return false;
    highlighted?.classList.remove('hl');
    highlighted = el;
    el.classList.add('hl');
    // A line in a folded section: unfold what holds it.
    for (let p = el.parentElement; p && p !== root; p = p.parentElement)
      if (p instanceof HTMLDetailsElement) p.open = true;
    el.scrollIntoView({ block: 'center' });
    return true;
  };
  const apply = (ev: LogEvent) => {
    const into = stack[stack.length - 1] as HTMLElement;
    if (ev.k === 'line') {
      const old = lines.get(ev.n);
      const el = lineElement(ev.n, ev.s);
      if (old) old.replaceWith(el);
      else into.append(el);
      lines.set(ev.n, el);
    } else if (ev.k === 'open') {
      lines.get(ev.n)?.remove(); // it was shown while it was still being printed
      const details = document.createElement('details');
      details.className = 'section';
      details.open = !ev.collapsed;
      // The header's number is no link: a summary may hold nothing interactive. #L<n> still finds it.
      const summary = document.createElement('summary');
      summary.id = `L${ev.n}`;
      summary.className = 'line';
      const number = document.createElement('span');
      number.className = 'ln';
      number.textContent = String(ev.n);
      const text = document.createElement('span');
      text.className = 't';
      spans(text, ev.s);
      summary.append(number, text);
      const inner = document.createElement('div');
      details.append(summary, inner);
      into.append(details);
      lines.set(ev.n, summary);
      stack.push(inner);
    } else if (stack.length > 1) stack.pop();
  };
  const events = new EventSource(root.dataset.stream as string);
  let opened = false;
  events.onopen = () => {
    // A reconnect streams the log again from its tail: start the page's copy afresh.
    if (opened) {
      root.replaceChildren();
      lines.clear();
      stack.length = 1;
      highlighted = undefined;
      if (note) note.textContent = '';
    }
    opened = true;
  };
  events.addEventListener('skipped', (e: MessageEvent<string>) => {
    const s = JSON.parse(e.data) as { lines: number; bytes: number };
    const p = document.createElement('div');
    p.className = 'note';
    p.textContent = `… ${s.lines.toLocaleString()} earlier lines (${(s.bytes / 1048576).toFixed(1)} MB) not shown: see the whole log`;
    root.prepend(p);
  });
  events.onmessage = (e: MessageEvent<string>) => {
    const follow = atBottom();
    for (const ev of JSON.parse(e.data) as LogEvent[]) apply(ev);
    if (!showTarget() && follow && !highlighted) root.scrollTop = root.scrollHeight;
  };
  // A click on a line number (or an edited address) marks that line.
  window.addEventListener('hashchange', () => showTarget());
  events.addEventListener('end', (e: MessageEvent<string>) => {
    events.close();
    const end = JSON.parse(e.data) as { state: string; exitCode: number | null };
    if (stateEl) {
      const badge = document.createElement('span');
      badge.className = `state s-${end.state}`;
      badge.textContent = end.state;
      stateEl.replaceChildren(badge);
    }
    if (note)
      note.textContent = `· ended: ${end.state}${end.exitCode === null ? '' : `, exit code ${end.exitCode}`}`;
    // The facts (duration, exit code, cost…) as the server renders them now that the job ended.
    fetch(location.pathname)
      .then((r) => (r.ok ? r.text() : Promise.reject(new Error(`${r.status} ${r.statusText}`))))
      .then((page) => {
        const facts = new DOMParser().parseFromString(page, 'text/html').getElementById('job-facts');
        if (facts) document.getElementById('job-facts')?.replaceWith(facts);
      })
      .catch((err: unknown) => console.warn('refreshing the job’s facts failed', err))
      .finally(() => (root.dataset.ended = end.state));
  });
  events.onerror = () => {
    // EventSource reconnects by itself; say so rather than leave a silent gap.
    if (note && events.readyState === EventSource.CONNECTING) note.textContent = '· reconnecting…';
  };
}
