import { run, scrubbedEnv, type ExecResult } from '../lib/exec.js';
import { UserError } from '../lib/errors.js';

/** The transports a repository URL may use; `file` only for tests and the operator's own repositories. */
export const GIT_PROTOCOLS = ['https', 'ssh', 'file', 'http', 'git'] as const;
export type GitProtocol = (typeof GIT_PROTOCOLS)[number];
export const DEFAULT_PROTOCOLS: readonly GitProtocol[] = ['https', 'ssh'];

/**
 * The transport a clone URL names, as git reads it: `scheme://…`, scp-like `user@host:path`
 * (ssh), or a local path (file). Anything else (`ext::`, `fd::`, a remote helper) is refused
 * here, before git sees it, and again by git's own allowlist.
 */
export function urlProtocol(url: string): GitProtocol {
  if (url.startsWith('-')) throw new UserError(`checkout.url "${url}" starts with "-": give a URL`);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'git+ssh' || scheme === 'ssh+git') return 'ssh';
  if (scheme) {
    if ((GIT_PROTOCOLS as readonly string[]).includes(scheme)) return scheme as GitProtocol;
    throw new UserError(`checkout.url: the ${scheme}:// transport is not supported; use https:// or ssh://`);
  }
  if (url.includes('::'))
    throw new UserError(`checkout.url "${url}" names a git remote helper; use https:// or ssh://`);
  if (url.startsWith('/')) return 'file';
  if (/^[^/:]+:/.test(url)) return 'ssh'; // user@host:path
  throw new UserError(`checkout.url "${url}" is not a URL git can clone; use https:// or ssh://`);
}

/** Refuses a URL whose transport is not in `allowed`, naming the setting that allows it. */
export function checkProtocol(url: string, allowed: readonly GitProtocol[]): GitProtocol {
  const p = urlProtocol(url);
  if (!allowed.includes(p))
    throw new UserError(
      `checkout.url "${url}" uses ${p}, which this node does not allow (allowed: ${allowed.join(', ')}); an operator can add it to workspaces.checkout_protocols in the config`,
    );
  return p;
}

/**
 * Runs git with nothing of the host's, the user's or a repository's configuration that could
 * run code or reach elsewhere: no system or global config, no hooks, no fsmonitor, no
 * credential helpers, no submodule recursion, only the allowed transports (also for
 * redirects and submodules), objects checked as they arrive, never a prompt. A repository
 * cannot configure any of this: its config never travels with a fetch, and the mirrors'
 * own config is written by Boxcar alone.
 */
export function hardenedGit(
  allowed: readonly GitProtocol[],
  args: readonly string[],
  opts: { timeoutMs?: number; env?: Record<string, string>; home: string },
): Promise<ExecResult> {
  const config = [
    'core.hooksPath=/dev/null',
    'core.fsmonitor=false',
    'core.sshCommand=ssh -o BatchMode=yes -o StrictHostKeyChecking=yes',
    'core.symlinks=true',
    'core.protectNTFS=true',
    'core.protectHFS=true',
    'credential.helper=',
    'submodule.recurse=false',
    'fetch.recurseSubmodules=false',
    'transfer.fsckObjects=true',
    'protocol.allow=never',
    ...allowed.map((p) => `protocol.${p}.allow=always`),
    'http.followRedirects=initial',
    'gc.auto=0',
    'maintenance.auto=false',
  ].flatMap((c) => ['-c', c]);
  return run('git', [...config, ...args], {
    timeoutMs: opts.timeoutMs,
    env: scrubbedEnv({
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_TERMINAL_PROMPT: '0',
      GIT_ALLOW_PROTOCOL: allowed.join(':'),
      GIT_ATTR_NOSYSTEM: '1',
      HOME: opts.home,
      ...opts.env,
    }),
  });
}
