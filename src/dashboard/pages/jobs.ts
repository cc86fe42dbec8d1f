import { html, type Html } from '../html.js';
import type { JobRecord } from '../../store/store.js';
import type { Viewer } from '../viewer.js';
import { ms, queueWait, stateBadge, when } from './format.js';
import { page } from './layout.js';

/** One job's row in the list; the live list replaces rows with newer renderings of this. */
export function jobRow(j: JobRecord, v: Viewer): Html {
  return html`<tr data-job="${j.id}">
    <td>
      <a href="/ui/jobs/${encodeURIComponent(j.id)}">${j.name}</a>
      <div class="sub">
        ${j.id.slice(0, 8)}${j.origin.pipeline ? html` · <a href="/ui/pipelines/${encodeURIComponent(j.origin.pipeline)}">pipeline</a>` : ''}
      </div>
    </td>
    ${v.role === 'operator' ? html`<td>${j.tenant}</td>` : ''}
    <td>
      ${stateBadge(j.state)}${j.waitReason && j.state === 'queued' ? html`<div class="sub">${j.waitReason}</div>` : ''}
    </td>
    <td>${j.runtime}</td>
    <td>${j.decision.trust}</td>
    <td class="num">${queueWait(j)}</td>
    <td>${when(j.startedAt)}</td>
    <td class="num">${ms(j.startupMs)}</td>
    <td class="num">${ms(j.durationMs)}</td>
  </tr>`;
}

export function jobsPage(jobs: JobRecord[], v: Viewer, limit: number): string {
  return page({
    title: 'Jobs',
    viewer: v,
    nav: 'jobs',
    scripts: ['jobs.js'],
    body: html`<h1>Jobs</h1>
      <p class="sub">
        The newest ${limit} ${v.role === 'operator' ? 'of the fleet' : `of tenant ${v.tenant}`}, updated live.
        <a href="/?limit=1000">Show 1,000</a>
      </p>
      <table class="jobs" data-live="/ui/events/jobs">
        <caption class="visually-hidden">
          Jobs, newest first
        </caption>
        <thead>
          <tr>
            <th scope="col">Job</th>
            ${v.role === 'operator' ? html`<th scope="col">Tenant</th>` : ''}
            <th scope="col">State</th>
            <th scope="col">Runtime</th>
            <th scope="col">Trust</th>
            <th scope="col">Queue wait</th>
            <th scope="col">Started (UTC)</th>
            <th scope="col">Sandbox start</th>
            <th scope="col">Duration</th>
          </tr>
        </thead>
        <tbody>
          ${jobs.map((j) => jobRow(j, v))}
        </tbody>
      </table>
      ${jobs.length ? '' : html`<p class="empty">No jobs yet. Submit one with <code>boxcar submit</code>.</p>`}`,
  });
}
