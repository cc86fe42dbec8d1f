import { createVerify, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import type { OpenApiDocument, SeenRequest } from './openapi-server.js';

const require = createRequire(import.meta.url);

/** GitHub's REST API description for api.github.com, from the npm package @octokit/openapi. */
export function githubSpec(): OpenApiDocument {
  return require('@octokit/openapi/generated/api.github.com.json') as OpenApiDocument;
}

/** The GitLab commit status API vendored from GitLab's docs (src/forge/gitlab/commit-status-api.yaml). */
export async function gitlabSpec(): Promise<OpenApiDocument> {
  const file = fileURLToPath(new URL('../../../../src/forge/gitlab/commit-status-api.yaml', import.meta.url));
  return parse(await readFile(file, 'utf8')) as OpenApiDocument;
}

/** A problem with a GitHub App JWT (RS256, signed by the App's key, `iss` the App id, ≤ 10 min), or none. */
export function jwtProblem(
  authorization: string | undefined,
  appId: number,
  publicKey: KeyObject,
): string | undefined {
  const m = /^Bearer ([\w-]+)\.([\w-]+)\.([\w-]+)$/.exec(authorization ?? '');
  if (!m) return 'not a Bearer JWT';
  const [, head, body, signature] = m as unknown as [string, string, string, string];
  const header = JSON.parse(Buffer.from(head, 'base64url').toString()) as { alg?: string };
  if (header.alg !== 'RS256') return `alg ${header.alg}, not RS256`;
  const ok = createVerify('RSA-SHA256')
    .update(`${head}.${body}`)
    .verify(publicKey, Buffer.from(signature, 'base64url'));
  if (!ok) return 'bad signature';
  const claims = JSON.parse(Buffer.from(body, 'base64url').toString()) as {
    iss?: string;
    iat?: number;
    exp?: number;
  };
  if (claims.iss !== String(appId)) return `iss ${claims.iss}`;
  const now = Date.now() / 1000;
  if (!claims.iat || !claims.exp || claims.exp - claims.iat > 600) return 'lifetime over 10 minutes';
  if (claims.iat > now + 1 || claims.exp < now) return 'not valid now';
  return undefined;
}

/** The GitHub operations that take the App's JWT rather than a token. */
export const GITHUB_APP_OPERATIONS = new Set([
  'apps/get-repo-installation',
  'apps/create-installation-access-token',
]);

/** Statuses a test server received, as (context, state) pairs in order, for one commit. */
export function statesOf(seen: SeenRequest[], context: string): string[] {
  return seen
    .filter((s) => s.problems.length === 0)
    .map((s) => s.body as { context?: string; name?: string; state?: string } | undefined)
    .filter((b) => (b?.context ?? b?.name) === context)
    .map((b) => b?.state as string);
}
