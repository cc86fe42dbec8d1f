import type { PipelineRecord } from './store.js';

/** A row of `pipelines`, decoded alike for every store (SQLite gives JSON as text, PostgreSQL as objects). */
export interface PipelineRow {
  id: string;
  tenant: string;
  name: string;
  state: string;
  plan: string | object;
  origin: string | object;
  classifier: string | object | null;
  jobs: string | object;
  cancel_requested: number | boolean;
  version: number | string;
  created_at: number | string;
  finished_at: number | string | null;
}

const json = <T>(v: string | object): T => (typeof v === 'string' ? JSON.parse(v) : v) as T;

export const toPipeline = (r: PipelineRow): PipelineRecord => ({
  id: r.id,
  tenant: r.tenant,
  name: r.name,
  state: r.state as PipelineRecord['state'],
  plan: json(r.plan),
  origin: json(r.origin),
  ...(r.classifier === null ? {} : { classifier: json(r.classifier) }),
  jobs: json(r.jobs),
  cancelRequested: Boolean(r.cancel_requested),
  version: Number(r.version),
  createdAt: Number(r.created_at),
  finishedAt: r.finished_at === null ? null : Number(r.finished_at),
});

/** The columns an update may set, in the order both stores bind them. */
export const pipelinePatchColumns = (patch: Partial<PipelineRecord>) => {
  const cols: Array<[string, unknown]> = [];
  if (patch.state !== undefined) cols.push(['state', patch.state]);
  if (patch.jobs !== undefined) cols.push(['jobs', JSON.stringify(patch.jobs)]);
  if (patch.cancelRequested !== undefined) cols.push(['cancel_requested', patch.cancelRequested]);
  if (patch.finishedAt !== undefined) cols.push(['finished_at', patch.finishedAt]);
  return cols;
};
