import type { CommitStatus, StatusState } from '../commit-status.js';
import { forgeCall } from '../http.js';

/** GitLab's commit status states (an error of Boxcar's is a failure there). */
const GITLAB_STATE: Record<StatusState, 'pending' | 'running' | 'success' | 'failed' | 'canceled'> = {
  pending: 'pending',
  running: 'running',
  success: 'success',
  failure: 'failed',
  error: 'failed',
  canceled: 'canceled',
};

/** GitLab refuses `ref`, `target_url` and `description` longer than this. */
const FIELD_MAX = 255;

/**
 * Commit statuses on GitLab (POST /api/v4/projects/:id/statuses/:sha, with a PRIVATE-TOKEN).
 * `repository` is the project of the merge request's source branch, as GitLab wants it.
 */
export function gitlabStatusSender(apiUrl: string, token: string) {
  return async (s: CommitStatus, signal: AbortSignal): Promise<void> => {
    await forgeCall(
      `setting GitLab status ${s.context} of ${s.repository}@${s.commit.slice(0, 12)}`,
      `${apiUrl}/api/v4/projects/${encodeURIComponent(s.repository)}/statuses/${s.commit}`,
      {
        method: 'POST',
        headers: { 'private-token': token, 'user-agent': 'boxcar' },
        body: {
          state: GITLAB_STATE[s.state],
          name: s.context,
          description: s.description.slice(0, FIELD_MAX),
          ...(s.ref && s.ref.length <= FIELD_MAX ? { ref: s.ref } : {}),
          ...(s.targetUrl && s.targetUrl.length <= FIELD_MAX ? { target_url: s.targetUrl } : {}),
        },
        signal,
      },
    );
  };
}
