import type { CommitStatus, StatusState } from '../commit-status.js';
import { ForgeCallError, forgeCall } from '../http.js';
import { GITHUB_HEADERS, type GithubAuth } from './auth.js';

/** GitHub's four states: no running (still pending), no cancelled (an error that says so). */
const GITHUB_STATE: Record<StatusState, 'pending' | 'success' | 'failure' | 'error'> = {
  pending: 'pending',
  running: 'pending',
  success: 'success',
  failure: 'failure',
  error: 'error',
  canceled: 'error',
};

/**
 * Commit statuses on GitHub (POST /repos/{owner}/{repo}/statuses/{sha}). Credentials GitHub
 * refuses are dropped (an App's token is taken again) and the call is tried again.
 */
export function githubStatusSender(apiUrl: string, auth: GithubAuth) {
  return async (s: CommitStatus, signal: AbortSignal): Promise<void> => {
    const authorization = await auth.authorization(s.repository, signal);
    try {
      await forgeCall(
        `setting GitHub status ${s.context} of ${s.repository}@${s.commit.slice(0, 12)}`,
        `${apiUrl}/repos/${s.repository}/statuses/${s.commit}`,
        {
          method: 'POST',
          headers: { ...GITHUB_HEADERS, authorization },
          body: {
            state: GITHUB_STATE[s.state],
            context: s.context,
            description: s.description,
            ...(s.targetUrl ? { target_url: s.targetUrl } : {}),
          },
          signal,
        },
      );
    } catch (err) {
      if (!(err instanceof ForgeCallError) || err.status !== 401) throw err;
      auth.refused(s.repository);
      throw new ForgeCallError(err.message, true, err.status);
    }
  };
}
