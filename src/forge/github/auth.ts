import { createPrivateKey, createSign, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { withContext } from '../../lib/errors.js';
import { ForgeCallError, forgeQuery } from '../http.js';

/** What every call to GitHub's REST API sends besides its credentials. */
export const GITHUB_HEADERS = {
  accept: 'application/vnd.github+json',
  'x-github-api-version': '2022-11-28',
  'user-agent': 'boxcar',
};

/** The `Authorization` header for calls about one repository. */
export interface GithubAuth {
  authorization(repository: string, signal: AbortSignal): Promise<string>;
  /** GitHub refused the credentials given for this repository: get fresh ones next time. */
  refused(repository: string): void;
}

/** A personal access token or any token that may write statuses: the same for every repository. */
export function tokenAuth(token: string): GithubAuth {
  return { authorization: async () => `Bearer ${token}`, refused: () => undefined };
}

/** GitHub accepts an App's JWT for at most 10 minutes; its clock may be a little ahead of ours. */
const JWT_LIFETIME_S = 9 * 60;
const CLOCK_SKEW_S = 60;
/** An installation token lives an hour: a new one is fetched when less than this is left. */
const TOKEN_MARGIN_MS = 5 * 60_000;
/** Repositories whose installation is remembered (the rest are looked up again). */
const MAX_REPOSITORIES = 1000;

const Installation = z.object({ id: z.number().int() });
const InstallationToken = z.object({ token: z.string().min(1), expires_at: z.string() });

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url');
}

/** An App's JWT (RS256): `iss` the App's id, issued a minute in the past against clock drift. */
export function appJwt(appId: number, key: KeyObject, now = Date.now()): string {
  const iat = Math.floor(now / 1000) - CLOCK_SKEW_S;
  const head = base64url(JSON.stringify({ alg: 'RS256', typ: 'JWT' }));
  const body = base64url(JSON.stringify({ iat, exp: iat + JWT_LIFETIME_S, iss: String(appId) }));
  const signature = createSign('RSA-SHA256').update(`${head}.${body}`).sign(key);
  return `${head}.${body}.${base64url(signature)}`;
}

/**
 * A GitHub App's installation tokens: the installation is found from the repository
 * (GET /repos/{owner}/{repo}/installation, with the App's JWT), its token taken with
 * POST /app/installations/{id}/access_tokens and kept until five minutes before it expires.
 * Concurrent callers share one lookup.
 */
export class AppAuth implements GithubAuth {
  private key: Promise<KeyObject> | undefined;
  private readonly installations = new Map<string, number>();
  private readonly tokens = new Map<number, Promise<{ token: string; expiresAt: number }>>();

  constructor(
    private readonly apiUrl: string,
    private readonly appId: number,
    private readonly privateKeyFile: string,
  ) {}

  async authorization(repository: string, signal: AbortSignal): Promise<string> {
    const installation = await this.installation(repository, signal);
    let pending = this.tokens.get(installation);
    const cached = await pending?.catch(() => undefined);
    if (!cached || cached.expiresAt - TOKEN_MARGIN_MS < Date.now()) {
      pending = this.accessToken(installation, signal);
      this.tokens.set(installation, pending);
      pending.catch(() => this.tokens.delete(installation));
    }
    return `Bearer ${(await (pending as Promise<{ token: string }>)).token}`;
  }

  refused(repository: string): void {
    const installation = this.installations.get(repository);
    this.installations.delete(repository);
    if (installation !== undefined) this.tokens.delete(installation);
  }

  private async jwt(): Promise<string> {
    this.key ??= readFile(this.privateKeyFile, 'utf8')
      .then((pem) => createPrivateKey(pem))
      .catch((err: unknown) => {
        this.key = undefined;
        throw new ForgeCallError(
          withContext(`reading the GitHub App's private key ${this.privateKeyFile}`, err).message,
          false,
        );
      });
    return appJwt(this.appId, await this.key);
  }

  private async installation(repository: string, signal: AbortSignal): Promise<number> {
    const known = this.installations.get(repository);
    if (known !== undefined) return known;
    const found = await forgeQuery(
      `finding the GitHub App installation of ${repository}`,
      `${this.apiUrl}/repos/${repository}/installation`,
      { method: 'GET', headers: { ...GITHUB_HEADERS, authorization: `Bearer ${await this.jwt()}` }, signal },
      Installation,
    );
    if (this.installations.size >= MAX_REPOSITORIES)
      this.installations.delete(this.installations.keys().next().value as string);
    this.installations.set(repository, found.id);
    return found.id;
  }

  private async accessToken(
    installation: number,
    signal: AbortSignal,
  ): Promise<{ token: string; expiresAt: number }> {
    const t = await forgeQuery(
      `taking an access token of GitHub App installation ${installation}`,
      `${this.apiUrl}/app/installations/${installation}/access_tokens`,
      { method: 'POST', headers: { ...GITHUB_HEADERS, authorization: `Bearer ${await this.jwt()}` }, signal },
      InstallationToken,
    );
    return { token: t.token, expiresAt: Date.parse(t.expires_at) };
  }
}
