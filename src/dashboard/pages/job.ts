import { formatBytes } from '../../lib/quantity.js';
import type { JobRecord } from '../../store/store.js';
import { html } from '../html.js';
import type { Viewer } from '../viewer.js';
import { ms, queueWait, stateBadge, when } from './format.js';
import { page } from './layout.js';

/** A job: what it is, why it runs where it runs, and its log (filled live by log.js). */
export function jobPage(j: JobRecord, v: Viewer): string {
  const id = encodeURIComponent(j.id);
  const pipeline = j.origin.pipeline;
  const facts: Array<[string, unknown]> = [
    ['Tenant', j.tenant],
    ['Runtime', j.runtime],
    ['Trust', j.decision.trust],
    ['Fallback', j.decision.fallback ?? '–'],
    ['Queued', when(j.createdAt)],
    ['Queue wait', queueWait(j)],
    ['Started', when(j.startedAt)],
    ['Sandbox start', ms(j.startupMs)],
    ['Duration', ms(j.durationMs)],
    ['Exit code', j.exitCode ?? '–'],
    ['Peak memory', j.peakMemoryBytes === null ? '–' : formatBytes(j.peakMemoryBytes)],
    ['Cost', j.costDollars === null ? '–' : `$${j.costDollars.toFixed(6)}`],
  ];
  return page({
    title: `Job ${j.name}`,
    viewer: v,
    nav: 'jobs',
    scripts: ['log.js'],
    body: html`<h1>${j.name} <span id="job-state">${stateBadge(j.state)}</span></h1>
      <p class="sub">
        Job
        ${j.id}${pipeline ? html` · pipeline <a href="/ui/pipelines/${encodeURIComponent(pipeline)}">${pipeline}</a>` : ''}
      </p>
      ${j.error ? html`<p class="error" role="alert">${j.error}</p>` : ''}
      <div class="cols">
        <section aria-labelledby="facts-h">
          <h2 id="facts-h">Facts</h2>
          <dl class="facts" id="job-facts">
            ${facts.map(
              ([k, val]) =>
                html`<dt>${k}</dt>
                  <dd>${val as string}</dd>`,
            )}
          </dl>
        </section>
        <section aria-labelledby="why-h">
          <h2 id="why-h">Why ${j.runtime}</h2>
          <ul class="reasons">
            ${j.decision.reasons.map((r) => html`<li>${r}</li>`)}
          </ul>
        </section>
      </div>
      <section aria-labelledby="log-h">
        <h2 id="log-h">Log</h2>
        <p class="sub"><a href="/ui/jobs/${id}/log.txt">Whole log as text</a> <span id="log-note"></span></p>
        <div id="log" class="log" data-stream="/ui/jobs/${id}/log" tabindex="0" aria-label="Job log"></div>
      </section>`,
  });
}
