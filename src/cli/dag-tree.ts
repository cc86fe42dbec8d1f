import type { pipelineView } from '../api/job-view.js';

type View = ReturnType<typeof pipelineView>;

const MARK: Record<string, string> = {
  succeeded: '✓',
  skipped: '○',
  waiting: '·',
  queued: '·',
  starting: '▶',
  running: '▶',
  cancelled: '⊘',
};

/**
 * A pipeline's DAG as a tree: each job under the first job it needs (jobs needing nothing at
 * the top), its other needs named beside it, with how it ended.
 */
export function dagTree(view: View): string {
  const jobs = view.jobs;
  const children = new Map<string, View['jobs']>();
  const roots: View['jobs'] = [];
  for (const j of jobs) {
    const parent = j.needs[0];
    if (parent === undefined) roots.push(j);
    else children.set(parent, [...(children.get(parent) ?? []), j]);
  }
  const lines: string[] = [`${view.name} (${view.state})`];
  const line = (j: View['jobs'][number], lead: string, last: boolean) => {
    const mark = MARK[j.status] ?? '✗';
    const rest = j.needs.slice(1);
    const also = rest.length > 3 ? [...rest.slice(0, 2), `${rest.length - 2} more`] : rest;
    const detail =
      j.status === 'skipped'
        ? `skipped: ${j.skipped}`
        : j.status + (j.allowFailure && mark === '✗' ? ' (allowed)' : '');
    lines.push(
      `${lead}${last ? '└─ ' : '├─ '}${mark} ${j.name} [${j.stage}] ${detail}${also.length ? `  (also needs ${also.join(', ')})` : ''}`,
    );
    const kids = children.get(j.name) ?? [];
    kids.forEach((k, i) => line(k, `${lead}${last ? '   ' : '│  '}`, i === kids.length - 1));
  };
  roots.forEach((r, i) => line(r, '', i === roots.length - 1));
  return lines.join('\n');
}
