import type { CostLine } from '../../cost/allocation.js';
import { formatMoney } from '../../cost/money.js';
import type { DailyCost } from '../cost-by-day.js';
import { html } from '../html.js';
import type { Viewer } from '../viewer.js';
import { stackedColumns } from './charts.js';
import { page } from './layout.js';

function costTable(title: string, lines: CostLine[]) {
  return html`<h3>${title}</h3>
    <table>
      <thead>
        <tr>
          <th scope="col">${title.replace('By ', '')}</th>
          <th scope="col">Jobs</th>
          <th scope="col">Memory</th>
          <th scope="col">CPU</th>
          <th scope="col">Runtime overhead</th>
          <th scope="col">Isolation premium</th>
          <th scope="col">Total</th>
        </tr>
      </thead>
      <tbody>
        ${lines.map(
          (l) =>
            html`<tr>
              <td>${l.key}</td>
              <td class="num">${l.jobs}</td>
              <td class="num">${formatMoney(l.memory, 4)}</td>
              <td class="num">${formatMoney(l.cpu, 4)}</td>
              <td class="num">${formatMoney(l.overhead, 4)}</td>
              <td class="num">${formatMoney(l.isolationPremium, 4)}</td>
              <td class="num">${formatMoney(l.total, 4)}</td>
            </tr>`,
        )}
      </tbody>
    </table>`;
}

/** What finished jobs cost per day, by runtime, and the period's totals by runtime and trust. */
export function costPage(
  days: DailyCost[],
  byRuntime: CostLine[],
  byTrust: CostLine[],
  v: Viewer,
  periodDays: number,
): string {
  const series = [...new Set(days.flatMap((d) => [...d.byRuntime.keys()]))].sort();
  return page({
    title: 'Cost',
    viewer: v,
    nav: 'cost',
    body: html`<h1>Cost</h1>
      <p class="sub">
        Finished jobs of the last ${periodDays}
        days${v.role === 'operator' ? ', every tenant' : `, tenant ${v.tenant}`}: max(request, usage) × time ×
        rate, the runtime's own overhead apart.
      </p>
      <section aria-labelledby="time-h">
        <h2 id="time-h">Cost per day</h2>
        ${stackedColumns(
          days.map((d) => ({
            label: d.day.slice(5),
            parts: series.map((s) => ({ series: s, value: d.byRuntime.get(s) ?? 0 })),
          })),
          { title: 'Cost per day by runtime', series, format: (m) => formatMoney(Math.round(m), 4) },
        )}
      </section>
      <section aria-labelledby="sum-h">
        <h2 id="sum-h">Totals</h2>
        ${costTable('By runtime', byRuntime)} ${costTable('By trust', byTrust)}
      </section>`,
  });
}
