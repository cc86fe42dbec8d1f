import { formatMs as ms } from '../../lib/quantity.js';
import { html, type Html } from '../html.js';

export { ms };

/** A moment as a `<time>`: UTC text, machine-readable attribute. */
export function when(at: number | null): Html | string {
  if (at === null) return '–';
  const iso = new Date(at).toISOString();
  return html`<time datetime="${iso}">${iso.slice(0, 19).replace('T', ' ')}</time>`;
}

/** How long a job waited in the queue: until it started, or so far. */
export function queueWait(
  j: { createdAt: number; startedAt: number | null; state: string },
  now = Date.now(),
) {
  if (j.startedAt !== null) return ms(j.startedAt - j.createdAt);
  return j.state === 'queued' ? `${ms(now - j.createdAt)} so far` : '–';
}

export function stateBadge(state: string): Html {
  return html`<span class="state s-${state}">${state}</span>`;
}
