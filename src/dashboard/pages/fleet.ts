import { formatBytes } from '../../lib/quantity.js';
import type { JobRecord } from '../../store/store.js';
import { html, type Html } from '../html.js';
import { byRuntime, histogram, percentile, START_BUCKETS_MS } from '../stats.js';
import type { Viewer } from '../viewer.js';
import { barChart } from './charts.js';
import type { OperatorStatus } from '../fleet-status.js';
import { ms } from './format.js';
import { page } from './layout.js';

const bucketLabel = (b: number, i: number) =>
  b === Infinity ? `> ${ms(START_BUCKETS_MS[i - 1] as number)}` : `≤ ${ms(b)}`;

/** A runtime's own status (a warm pool's idle VMs…) as a definition list. */
function statusList(status: Record<string, unknown>): Html {
  return html`<dl class="facts">
    ${Object.entries(status).map(
      ([k, v]) =>
        html`<dt>${k}</dt>
          <dd><code>${JSON.stringify(v)}</code></dd>`,
    )}
  </dl>`;
}

function nodeSection({ node: n, runtimes }: OperatorStatus): Html {
  return html`<section aria-labelledby="breakers-h">
      <h2 id="breakers-h">Runtimes: queue and breakers</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">Runtime</th>
            <th scope="col">Queued (every node)</th>
            <th scope="col">Breaker</th>
            <th scope="col">Failed starts</th>
            <th scope="col">Why</th>
          </tr>
        </thead>
        <tbody>
          ${runtimes.map(
            (r) =>
              html`<tr>
                <td>${r.runtime}</td>
                <td class="num">${r.queued}</td>
                <td><span class="state b-${r.breaker}">${r.breaker}</span></td>
                <td class="num">${(r.failureRate * 100).toFixed(0)}% of ${r.samples}</td>
                <td>${r.breakerReason || '–'}</td>
              </tr>`,
          )}
        </tbody>
      </table>
    </section>
    <section aria-labelledby="node-h">
      <h2 id="node-h">Node ${n.node}</h2>
      <dl class="facts">
        <dt>Jobs running</dt>
        <dd>${n.running}</dd>
        <dt>Memory requested</dt>
        <dd>${formatBytes(n.requested.requestsMemoryBytes)} of ${formatBytes(n.capacity.memoryBytes)}</dd>
        <dt>CPU requested</dt>
        <dd>${n.requested.requestsCpuMillis}m of ${n.capacity.cpuMillis}m</dd>
        <dt>Control plane RSS</dt>
        <dd>${formatBytes(n.memory.rss)}</dd>
      </dl>
      <h3>Runtimes</h3>
      <table>
        <thead>
          <tr>
            <th scope="col">Runtime</th>
            <th scope="col">Usable</th>
            <th scope="col">Untrusted code</th>
            <th scope="col">Why</th>
          </tr>
        </thead>
        <tbody>
          ${n.runtimes.map(
            (r) =>
              html`<tr>
                <td>${r.runtime}</td>
                <td>${r.usable ? 'yes' : 'no'}</td>
                <td>
                  ${r.untrustedCode ? `${r.untrustedCode.allowed ? 'allowed' : 'refused'}: ${r.untrustedCode.why}` : '–'}
                </td>
                <td>${r.reason}</td>
              </tr>`,
          )}
        </tbody>
      </table>
      <h3>Warm pools and runtime status</h3>
      ${
        Object.keys(n.runtimeStatus).length
          ? Object.entries(n.runtimeStatus).map(
              ([r, s]) =>
                html`<h4>${r}</h4>
                  ${statusList(s)}`,
            )
          : html`<p>No runtime here keeps a pool.</p>`
      }
    </section>`;
}

/**
 * The fleet as the viewer may see it (an operator: every tenant's jobs, and this node): the
 * runtime mix, sandbox start times per runtime as histograms, queue waits.
 */
export function fleetPage(jobs: JobRecord[], v: Viewer, operator: OperatorStatus | undefined): string {
  const figures = byRuntime(jobs);
  return page({
    title: 'Fleet',
    viewer: v,
    nav: 'fleet',
    body: html`<h1>Fleet</h1>
      <p class="sub">
        From the newest ${jobs.length}
        jobs${v.role === 'operator' ? ' of every tenant' : ` of tenant ${v.tenant}`}.
      </p>
      <section aria-labelledby="mix-h">
        <h2 id="mix-h">Runtime mix</h2>
        ${
          figures.length
            ? barChart(
                figures.map((f) => ({
                  label: f.runtime,
                  value: f.jobs,
                  text: `${f.jobs} jobs (${f.untrusted} untrusted, ${f.live} live)`,
                })),
                { title: 'Jobs per runtime', width: 720, textRoom: 260 },
              )
            : html`<p>No jobs yet.</p>`
        }
      </section>
      <section aria-labelledby="wait-h">
        <h2 id="wait-h">Queue waits and sandbox starts</h2>
        <table>
          <thead>
            <tr>
              <th scope="col">Runtime</th>
              <th scope="col">Jobs</th>
              <th scope="col">Queue wait p50</th>
              <th scope="col">p95</th>
              <th scope="col">Sandbox start p50</th>
              <th scope="col">p95</th>
            </tr>
          </thead>
          <tbody>
            ${figures.map(
              (f) =>
                html`<tr>
                  <td>${f.runtime}</td>
                  <td class="num">${f.jobs}</td>
                  <td class="num">${ms(percentile(f.queueWaitMs, 0.5))}</td>
                  <td class="num">${ms(percentile(f.queueWaitMs, 0.95))}</td>
                  <td class="num">${ms(percentile(f.startupMs, 0.5))}</td>
                  <td class="num">${ms(percentile(f.startupMs, 0.95))}</td>
                </tr>`,
            )}
          </tbody>
        </table>
      </section>
      <section aria-labelledby="hist-h">
        <h2 id="hist-h">Sandbox start time per runtime</h2>
        <div class="grid">
          ${figures
            .filter((f) => f.startupMs.length)
            .map(
              (f) =>
                html`<figure>
                  <figcaption>${f.runtime} (${f.startupMs.length} starts)</figcaption>
                  ${barChart(
                    histogram(f.startupMs, START_BUCKETS_MS).map((count, i) => ({
                      label: bucketLabel(START_BUCKETS_MS[i] as number, i),
                      value: count,
                    })),
                    { title: `Sandbox start times on ${f.runtime}`, series: 'hist' },
                  )}
                </figure>`,
            )}
        </div>
      </section>
      ${operator ? nodeSection(operator) : ''}`,
  });
}
