import type { pipelineView } from '../../api/job-view.js';
import { html, type Html } from '../html.js';
import type { Viewer } from '../viewer.js';
import { stateBadge, when } from './format.js';
import { page } from './layout.js';

type View = ReturnType<typeof pipelineView>;
type PJob = View['jobs'][number];

const BOX_W = 190;
const BOX_H = 46;
const GAP_X = 70;
const GAP_Y = 18;

/** Each job's column: one past the deepest job it needs (jobs needing none in the first). */
export function dagColumns(jobs: ReadonlyArray<Pick<PJob, 'name' | 'needs'>>): Map<string, number> {
  const needs = new Map(jobs.map((j) => [j.name, j.needs]));
  const depth = new Map<string, number>();
  const visit = (name: string, path: Set<string>): number => {
    const known = depth.get(name);
    if (known !== undefined) return known;
    if (path.has(name)) return 0; // plans are checked acyclic; this only keeps a bad record from looping
    path.add(name);
    const d =
      Math.max(-1, ...(needs.get(name) ?? []).filter((n) => needs.has(n)).map((n) => visit(n, path))) + 1;
    path.delete(name);
    depth.set(name, d);
    return d;
  };
  for (const j of jobs) visit(j.name, new Set());
  return depth;
}

/** The DAG as SVG: a column per depth, an edge for each need, each job a link to its page. */
function dagSvg(jobs: PJob[]): Html {
  const col = dagColumns(jobs);
  const rows = new Map<number, number>();
  const at = new Map<string, { x: number; y: number }>();
  for (const j of jobs) {
    const c = col.get(j.name) ?? 0;
    const r = rows.get(c) ?? 0;
    rows.set(c, r + 1);
    at.set(j.name, { x: c * (BOX_W + GAP_X) + 4, y: r * (BOX_H + GAP_Y) + 4 });
  }
  const width = (Math.max(0, ...col.values()) + 1) * (BOX_W + GAP_X);
  const height = Math.max(1, ...rows.values()) * (BOX_H + GAP_Y) + 8;
  const edges = jobs.flatMap((j) =>
    j.needs.flatMap((n) => {
      const a = at.get(n);
      const b = at.get(j.name);
      if (!a || !b) return [];
      const x1 = a.x + BOX_W;
      const y1 = a.y + BOX_H / 2;
      const x2 = b.x;
      const y2 = b.y + BOX_H / 2;
      const mx = (x1 + x2) / 2;
      return [html`<path class="edge" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}" />`];
    }),
  );
  const boxes = jobs.map((j) => {
    const p = at.get(j.name) as { x: number; y: number };
    const label = html`<rect
        class="node s-${j.status}"
        x="${p.x}"
        y="${p.y}"
        width="${BOX_W}"
        height="${BOX_H}"
        rx="6"
      />
      <text x="${p.x + 10}" y="${p.y + 19}" class="node-name">${j.name}</text>
      <text x="${p.x + 10}" y="${p.y + 37}" class="node-state">${j.status} · ${j.stage}</text>`;
    return j.job ? html`<a href="/ui/jobs/${encodeURIComponent(j.job)}">${label}</a>` : html`<g>${label}</g>`;
  });
  return html`<svg class="dag" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">
    ${edges}${boxes}
  </svg>`;
}

export function pipelinePage(p: View, v: Viewer): string {
  return page({
    title: `Pipeline ${p.name}`,
    viewer: v,
    nav: 'jobs',
    body: html`<h1>${p.name} ${stateBadge(p.state)}</h1>
      <p class="sub">
        Pipeline
        ${p.id}${p.repository ? html` · ${p.repository}` : ''}${p.commit ? html` @ <code>${p.commit.slice(0, 12)}</code>` : ''}
        · created ${when(p.createdAt)}
      </p>
      <figure class="dag-wrap">
        <figcaption class="visually-hidden">Pipeline graph</figcaption>
        ${dagSvg(p.jobs)}
      </figure>
      <h2>Jobs</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">Job</th>
            <th scope="col">Stage</th>
            <th scope="col">Needs</th>
            <th scope="col">Status</th>
            <th scope="col">Attempts</th>
          </tr>
        </thead>
        <tbody>
          ${p.jobs.map(
            (j) =>
              html`<tr>
                <td>
                  ${j.job ? html`<a href="/ui/jobs/${encodeURIComponent(j.job)}">${j.name}</a>` : j.name}
                </td>
                <td>${j.stage}</td>
                <td>${j.needs.join(', ') || '–'}</td>
                <td>
                  ${stateBadge(j.status)}${j.skipped ? html`<div class="sub">${j.skipped}</div>` : ''}${j.error ? html`<div class="sub">${j.error}</div>` : ''}
                </td>
                <td class="num">${j.attempts.length}</td>
              </tr>`,
          )}
        </tbody>
      </table>`,
  });
}
