import { isIP } from 'node:net';
import { UserError } from '../lib/errors.js';

/**
 * Image references as Docker and containerd read them: `[registry/]repository[:tag][@digest]`.
 * The first part is a registry when it has a dot or a port or is `localhost`; otherwise the
 * image is on Docker Hub, whose official images live under `library/`.
 */
export interface ImageReference {
  /** The registry's host[:port] as written (Docker Hub: `docker.io`). */
  registry: string;
  repository: string;
  tag: string | undefined;
  digest: string | undefined;
}

const DOCKER_HUB = 'docker.io';
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

export function parseReference(text: string): ImageReference {
  const bad = (why: string) =>
    new UserError(
      `image "${text}": ${why}; write it as [registry/]name[:tag][@sha256:digest], e.g. 127.0.0.1:5000/team/app:1`,
    );
  let rest = text.trim();
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(`"${digest}" is not a sha256 digest`);
  }
  const slash = rest.indexOf('/');
  const first = slash >= 0 ? rest.slice(0, slash) : '';
  const hasRegistry = slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost');
  const registry = hasRegistry ? first : DOCKER_HUB;
  let path = hasRegistry ? rest.slice(slash + 1) : rest;
  let tag: string | undefined;
  const colon = path.lastIndexOf(':');
  if (colon >= 0) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!TAG.test(tag)) throw bad(`"${tag}" is not a tag`);
  }
  if (!path || !path.split('/').every((c) => COMPONENT.test(c)))
    throw bad(
      `"${path}" is not a repository name (lower-case letters, digits, ".", "_", "-", separated by "/")`,
    );
  if (registry === DOCKER_HUB && !path.includes('/')) path = `library/${path}`;
  if (!tag && !digest) tag = 'latest';
  return { registry, repository: path, tag, digest };
}

export function formatReference(r: ImageReference): string {
  return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}

/** The host requests go to: Docker Hub's API lives at registry-1.docker.io. */
export function registryHost(registry: string): string {
  return registry === DOCKER_HUB ? 'registry-1.docker.io' : registry;
}

/**
 * Plain HTTP only for a registry on a loopback address or one the operator lists as insecure,
 * as Docker and containerd do; HTTPS everywhere else.
 */
export function registryScheme(registry: string, insecure: readonly string[]): 'http' | 'https' {
  const host = registry.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
  const loopback = host === 'localhost' || (isIP(host) === 4 && host.startsWith('127.')) || host === '::1';
  return loopback || insecure.includes(registry) ? 'http' : 'https';
}

/** References Boxcar builds itself (`boxcar/base`): never pulled. */
export function isLocalReference(text: string): boolean {
  return /^boxcar\//.test(text.trim());
}
