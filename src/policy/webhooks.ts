/**
 * Trust inputs from real webhook payloads. GitHub: a pull request is internal only when its
 * head branch lives in the base repository and its author is OWNER, MEMBER or COLLABORATOR.
 * GitLab: a merge request is internal only when its source project is the target project
 * (only people who can push to the project can open such a merge request).
 */

import { z } from 'zod';
import { UserError } from '../lib/errors.js';
import type { TrustInputs } from './trust.js';

const TRUSTED_ASSOCIATIONS = ['OWNER', 'MEMBER', 'COLLABORATOR'];

const GitHubPullRequest = z.object({
  action: z.string().optional(),
  number: z.number().optional(),
  pull_request: z.object({
    number: z.number().optional(),
    author_association: z.string(),
    user: z.object({ login: z.string() }).nullable().optional(),
    head: z.object({ repo: z.object({ full_name: z.string() }).nullable() }),
    base: z.object({ repo: z.object({ full_name: z.string() }) }),
  }),
});

const GitLabMergeRequest = z.object({
  object_kind: z.literal('merge_request'),
  user: z.object({ username: z.string() }).optional(),
  object_attributes: z.object({
    iid: z.number().optional(),
    source_project_id: z.number().nullable(),
    target_project_id: z.number(),
    source: z.object({ path_with_namespace: z.string() }).nullable().optional(),
    target: z.object({ path_with_namespace: z.string() }),
  }),
});

function parsePayload<S extends z.ZodType>(schema: S, payload: unknown, what: string): z.output<S> {
  const r = schema.safeParse(payload);
  if (r.success) return r.data;
  const first = r.error.issues[0];
  throw new UserError(
    `not a ${what} payload: ${first ? `${first.path.join('.') || '(top level)'}: ${first.message}` : 'unexpected shape'}`,
  );
}

export function githubPullRequestTrust(payload: unknown): TrustInputs {
  const p = parsePayload(GitHubPullRequest, payload, 'GitHub pull_request event');
  const pr = p.pull_request;
  const base = pr.base.repo.full_name;
  const head = pr.head.repo?.full_name;
  const sameRepo = head === base;
  const knownAuthor = TRUSTED_ASSOCIATIONS.includes(pr.author_association);
  const internal = sameRepo && knownAuthor;
  const who = pr.user?.login ?? 'unknown';
  const evidence = [
    `GitHub pull request #${pr.number ?? p.number ?? '?'} into ${base} from ${head ?? 'a deleted repository'}${sameRepo ? ' (same repository)' : ' (a fork)'}`,
    `author ${who} is ${pr.author_association}${knownAuthor ? '' : ` (not ${TRUSTED_ASSOCIATIONS.join('/')})`}`,
  ];
  return {
    source: internal ? 'internal_repo' : 'external_pr',
    userGroup: knownAuthor ? 'internal_team' : 'external_contributor',
    repository: base,
    evidence,
  };
}

export function gitlabMergeRequestTrust(payload: unknown): TrustInputs {
  const p = parsePayload(GitLabMergeRequest, payload, 'GitLab merge request event');
  const a = p.object_attributes;
  const sameProject = a.source_project_id !== null && a.source_project_id === a.target_project_id;
  const target = a.target.path_with_namespace;
  const evidence = [
    `GitLab merge request !${a.iid ?? '?'} into ${target} from ${a.source?.path_with_namespace ?? 'a deleted project'}${sameProject ? ' (same project)' : ' (a fork)'}`,
  ];
  return {
    source: sameProject ? 'internal_repo' : 'external_pr',
    userGroup: sameProject ? 'internal_team' : 'external_contributor',
    repository: target,
    evidence,
  };
}
