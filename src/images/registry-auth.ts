import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ifExistsSync, UserError } from '../lib/errors.js';

/**
 * Who Boxcar is to a registry: credentials from the config file (`registries.auth`) or from a
 * Docker `config.json` (`$DOCKER_CONFIG`, `~/.docker/config.json`, or `registries.docker_config`),
 * and the registries' `WWW-Authenticate` challenges (Basic, or Bearer with a token service).
 */
export interface Credentials {
  username: string;
  password: string;
}

/**
 * Whose credentials a request carries: the node's own (the config file, a Docker config.json),
 * or a tenant's. Tokens a registry gives one identity are never sent for another.
 */
export interface RegistryIdentity {
  id: string;
  credentials(registry: string): Promise<Credentials | undefined>;
  /** How this identity is given credentials for `registry`: the fix a refusal names. */
  howToLogIn(registry: string): string;
}

/** The node's own identity, from the config file or a Docker config.json. */
export function nodeIdentity(credentials: (registry: string) => Credentials | undefined): RegistryIdentity {
  return {
    id: 'node',
    credentials: async (registry) => credentials(registry),
    howToLogIn: (registry) =>
      `give credentials for ${registry} under registries.auth in the config file or in a Docker config.json`,
  };
}

export interface Challenge {
  scheme: 'basic' | 'bearer';
  params: Record<string, string>;
}

/** `Bearer realm="https://auth.example/token",service="registry",scope="repository:x:pull"` */
export function parseChallenge(header: string | null): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/.exec(header);
  const scheme = m?.[1]?.toLowerCase();
  if (scheme !== 'basic' && scheme !== 'bearer') return undefined;
  const params: Record<string, string> = {};
  for (const p of (m?.[2] ?? '').matchAll(/(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/g))
    params[(p[1] as string).toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
  return { scheme, params };
}

interface DockerConfigFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string }>;
}

/** Docker Hub's credentials are filed under its old index URL. */
const DOCKER_HUB_KEYS = [
  'docker.io',
  'index.docker.io',
  'https://index.docker.io/v1/',
  'registry-1.docker.io',
];

export function dockerConfigCredentials(registry: string, file?: string): Credentials | undefined {
  const where =
    file ?? path.join(process.env.DOCKER_CONFIG ?? path.join(os.homedir(), '.docker'), 'config.json');
  const text = ifExistsSync(() => readFileSync(where, 'utf8'));
  if (text === undefined) return undefined;
  let cfg: DockerConfigFile;
  try {
    cfg = JSON.parse(text) as DockerConfigFile;
  } catch {
    throw new UserError(`${where} is not valid JSON; fix it or point registries.docker_config elsewhere`);
  }
  const keys =
    registry === 'docker.io' ? DOCKER_HUB_KEYS : [registry, `https://${registry}`, `http://${registry}`];
  for (const key of keys) {
    const entry = cfg.auths?.[key];
    if (!entry) continue;
    if (entry.username && entry.password) return { username: entry.username, password: entry.password };
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon > 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    }
  }
  return undefined;
}

export const basicAuth = (c: Credentials) =>
  `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
