import { createHash, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { errnoCode, errorMessage, UserError } from '../lib/errors.js';
import { sleep } from '../lib/exec.js';
import { PaceCancelled } from '../lib/pace.js';
import {
  basicAuth,
  nodeIdentity,
  parseChallenge,
  type Credentials,
  type RegistryIdentity,
} from './registry-auth.js';
import { formatReference, registryHost, registryScheme, type ImageReference } from './reference.js';

/**
 * A client of the OCI Distribution API on Node's own fetch. Manifests (OCI and Docker schema 2,
 * and image indexes, resolved to this platform) and blobs, each verified against its digest as
 * it streams and bounded in size; retries with backoff, an interrupted blob resumed with a range
 * request; anonymous, Basic or Bearer (token service) access. Credentials go only to the
 * registry they are for: never to another host on a redirect, and to a token service on another
 * host only when the operator names it (`registries.token_hosts`).
 */
export const MANIFEST_TYPES = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
} as const;
const ACCEPT = Object.values(MANIFEST_TYPES).join(', ');
const INDEX_TYPES: string[] = [MANIFEST_TYPES.ociIndex, MANIFEST_TYPES.dockerList];

export interface RegistryClientOptions {
  /** Registries (host[:port]) reached over plain HTTP although not on loopback. */
  insecure: readonly string[];
  credentials: (registry: string) => Credentials | undefined;
  /** Token-service hosts a registry's credentials may be sent to, per registry. */
  tokenHosts?: Readonly<Record<string, readonly string[]>>;
  maxManifestBytes?: number;
  maxBlobBytes?: number;
  attempts?: number;
  /** The first retry's wait; each next one doubles it. */
  backoffMs?: number;
}

export interface FetchedManifest {
  digest: string;
  mediaType: string;
  body: Buffer;
}

interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

const MAX_REDIRECTS = 5;
/** Docker Hub's token service is on another host than its registry, by design. */
const KNOWN_TOKEN_HOSTS: Record<string, string[]> = { 'docker.io': ['auth.docker.io'] };

export class RegistryError extends UserError {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

/** A registry that did not answer at all: the cause's code (ECONNREFUSED…) says why. */
function unreachable(registry: string, err: unknown): RegistryError {
  const cause = err instanceof Error ? err.cause : undefined;
  const why = errnoCode(cause) ?? errnoCode(err) ?? errorMessage(cause ?? err);
  const e = new RegistryError(
    `cannot reach registry ${registry} (${why}); check that it is up at that address`,
  );
  e.cause = err;
  return e;
}

export function hostPlatform(): Platform {
  return {
    os: 'linux',
    architecture: process.arch === 'x64' ? 'amd64' : process.arch === 'arm64' ? 'arm64' : process.arch,
  };
}

export class RegistryClient {
  private readonly identity: RegistryIdentity;

  constructor(
    private readonly opts: RegistryClientOptions,
    identity?: RegistryIdentity,
    /** Authorization headers per identity, registry and scope, shared by every `as` view. */
    private readonly tokens = new Map<string, { header: string; until: number }>(),
  ) {
    this.identity = identity ?? nodeIdentity(opts.credentials);
  }

  /** This client with `identity`'s credentials (a tenant's) instead of the node's. */
  as(identity: RegistryIdentity | undefined): RegistryClient {
    return identity ? new RegistryClient(this.opts, identity, this.tokens) : this;
  }

  private base(registry: string): string {
    return `${registryScheme(registry, this.opts.insecure)}://${registryHost(registry)}`;
  }

  /**
   * The manifest a reference names, for this platform (an index is resolved), verified by
   * digest. By tag, the digest is the body's; by digest, the body must hash to it.
   */
  async manifest(ref: ImageReference, platform: Platform = hostPlatform()): Promise<FetchedManifest> {
    const top = await this.manifestByRef(ref, ref.digest ?? (ref.tag as string));
    if (!INDEX_TYPES.includes(top.mediaType)) return top;
    const index = JSON.parse(top.body.toString('utf8')) as {
      manifests: Array<{ digest: string; mediaType: string; platform?: Platform }>;
    };
    const match = index.manifests.find(
      (m) => m.platform?.os === platform.os && m.platform.architecture === platform.architecture,
    );
    if (!match)
      throw new RegistryError(
        `image ${formatReference(ref)} has no ${platform.os}/${platform.architecture} variant (it has ${index.manifests.map((m) => `${m.platform?.os}/${m.platform?.architecture}`).join(', ')})`,
      );
    return this.manifestByRef(ref, match.digest);
  }

  private async manifestByRef(ref: ImageReference, reference: string): Promise<FetchedManifest> {
    const res = await this.request(ref, `/v2/${ref.repository}/manifests/${reference}`, { accept: ACCEPT });
    const max = this.opts.maxManifestBytes ?? 4 * 2 ** 20;
    const body = await readBounded(res, max, `the manifest of ${formatReference(ref)}`);
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    if (reference.startsWith('sha256:') && digest !== reference)
      throw new RegistryError(
        `the registry sent a manifest for ${reference} whose digest is ${digest}: refused`,
      );
    const claimed = res.headers.get('docker-content-digest');
    if (claimed && claimed !== digest)
      throw new RegistryError(
        `the registry says manifest ${claimed}, but its body hashes to ${digest}: refused`,
      );
    const mediaType =
      (JSON.parse(body.toString('utf8')) as { mediaType?: string }).mediaType ??
      res.headers.get('content-type')?.split(';')[0] ??
      '';
    return { digest, mediaType, body };
  }

  /**
   * Downloads a blob into `file` (created or truncated), verifying its size and digest as it
   * streams; an interrupted transfer resumes where it stopped (a range request) and is retried
   * with backoff. `progress` is told how many bytes from the start are in the file (fewer
   * after a registry ignored a resume and the transfer started over). `pace`, when given, is
   * awaited after each piece received (a background pull's bandwidth cap).
   */
  async blobToFile(
    ref: ImageReference,
    blob: { digest: string; size: number },
    file: string,
    progress?: (bytes: number) => void,
    pace?: (bytes: number) => Promise<void>,
  ): Promise<void> {
    const max = this.opts.maxBlobBytes ?? 20 * 2 ** 30;
    if (blob.size > max)
      throw new RegistryError(
        `blob ${blob.digest} is ${blob.size} bytes, over the ${max}-byte limit: refused`,
      );
    const fh = await open(file, 'w', 0o600);
    // What has reached the file so far, kept across attempts: a cut transfer resumes from here.
    const got = { bytes: 0, hash: createHash('sha256') };
    try {
      const attempts = this.opts.attempts ?? 4;
      for (let attempt = 1; ; attempt++) {
        try {
          const res = await this.request(ref, `/v2/${ref.repository}/blobs/${blob.digest}`, {
            ...(got.bytes > 0 ? { range: `bytes=${got.bytes}-` } : {}),
          });
          if (got.bytes > 0 && res.status !== 206) {
            // The registry ignored the range: start over.
            got.bytes = 0;
            got.hash = createHash('sha256');
            await fh.truncate(0);
          }
          await this.stream(res, fh, got, blob, progress, pace);
          break;
        } catch (err) {
          if (err instanceof RegistryError || err instanceof PaceCancelled || attempt >= attempts) throw err;
          await sleep((this.opts.backoffMs ?? 200) * 2 ** (attempt - 1));
        }
      }
      const digest = `sha256:${got.hash.digest('hex')}`;
      if (got.bytes !== blob.size || digest !== blob.digest)
        throw new RegistryError(
          `blob ${blob.digest} arrived as ${got.bytes} bytes hashing to ${digest} (expected ${blob.size} bytes): refused`,
        );
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  /**
   * Bytes [start, end) of a blob, streamed as they arrive (a range request, retried with
   * backoff until the response starts). Not verified: the caller checks the whole blob's digest.
   */
  async *blobRange(
    ref: ImageReference,
    digest: string,
    start: number,
    end: number,
  ): AsyncIterable<Uint8Array> {
    const res = await this.request(ref, `/v2/${ref.repository}/blobs/${digest}`, {
      range: `bytes=${start}-${end - 1}`,
    });
    // A registry that ignores ranges sends the whole blob: skip to the range and stop after it.
    let skip = res.status === 206 ? 0 : start;
    let left = end - start;
    // Leaving the loop early (the range is done, or the caller stopped) cancels the response.
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      const part = chunk.subarray(Math.min(skip, chunk.length), Math.min(chunk.length, skip + left));
      skip = Math.max(0, skip - chunk.length);
      left -= part.length;
      if (part.length) yield part;
      if (left === 0) break;
    }
    if (left > 0) throw new Error(`blob ${digest} ended ${left} bytes short of bytes ${start}-${end - 1}`);
  }

  private async stream(
    res: Response,
    fh: Awaited<ReturnType<typeof open>>,
    got: { bytes: number; hash: Hash },
    blob: { digest: string; size: number },
    progress?: (bytes: number) => void,
    pace?: (bytes: number) => Promise<void>,
  ): Promise<void> {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      if (got.bytes + chunk.length > blob.size)
        throw new RegistryError(`blob ${blob.digest} is longer than its ${blob.size} bytes: refused`);
      await fh.write(chunk, 0, chunk.length, got.bytes);
      got.hash.update(chunk);
      got.bytes += chunk.length;
      progress?.(got.bytes);
      await pace?.(chunk.length);
    }
  }

  /**
   * One API request with its retries: authentication answered once per challenge, redirects
   * followed by hand so credentials never leave the registry's host, 429 and 5xx retried with
   * backoff (or the registry's Retry-After).
   */
  private async request(
    ref: ImageReference,
    path: string,
    headers: Record<string, string>,
  ): Promise<Response> {
    const attempts = this.opts.attempts ?? 4;
    for (let attempt = 1; ; attempt++) {
      let res: Response;
      try {
        res = await this.authorized(ref, `${this.base(ref.registry)}${path}`, headers);
      } catch (err) {
        if (err instanceof RegistryError || attempt >= attempts)
          throw err instanceof RegistryError ? err : unreachable(ref.registry, err);
        await sleep((this.opts.backoffMs ?? 200) * 2 ** (attempt - 1));
        continue;
      }
      if (res.ok) return res;
      const retryable = res.status === 429 || res.status >= 500;
      if (!retryable || attempt >= attempts) throw await this.failure(ref, path, res);
      await res.body?.cancel();
      const after = Number(res.headers.get('retry-after'));
      await sleep(
        Number.isFinite(after) && after > 0
          ? Math.min(after, 30) * 1000
          : (this.opts.backoffMs ?? 200) * 2 ** (attempt - 1),
      );
    }
  }

  private async failure(ref: ImageReference, path: string, res: Response): Promise<RegistryError> {
    const text = (await res.text().catch(() => '')).slice(0, 300);
    const what = path.includes('/manifests/')
      ? `image ${formatReference(ref)}`
      : `a blob of ${formatReference(ref)}`;
    if (res.status === 404) return new RegistryError(`${what} was not found on ${ref.registry} (404)`, 404);
    if (res.status === 401 || res.status === 403)
      return new RegistryError(
        `${ref.registry} refused access to ${what} (${res.status}); ${this.identity.howToLogIn(ref.registry)}`,
        res.status,
      );
    return new RegistryError(`${ref.registry} answered ${res.status} for ${what}: ${text}`, res.status);
  }

  /** A request with what authorization this registry has asked for, answering one challenge. */
  private async authorized(
    ref: ImageReference,
    url: string,
    headers: Record<string, string>,
  ): Promise<Response> {
    const scope = `repository:${ref.repository}:pull`;
    const key = `${this.identity.id} ${ref.registry} ${scope}`;
    const cached = this.tokens.get(key);
    const auth = cached && cached.until > Date.now() ? cached.header : undefined;
    const first = await this.follow(url, { ...headers, ...(auth ? { authorization: auth } : {}) });
    if (first.status !== 401) return first;
    const challenge = parseChallenge(first.headers.get('www-authenticate'));
    await first.body?.cancel();
    if (!challenge) return this.follow(url, headers); // a 401 with no challenge: nothing to answer
    const creds = await this.identity.credentials(ref.registry);
    let header: string | undefined;
    let until = Date.now() + 5 * 60_000;
    if (challenge.scheme === 'basic') {
      if (!creds) return this.follow(url, headers);
      header = basicAuth(creds);
    } else {
      const token = await this.token(ref, challenge, scope, creds);
      header = `Bearer ${token.token}`;
      until = Date.now() + Math.max(10, token.expiresIn - 10) * 1000;
    }
    this.tokens.set(key, { header, until });
    return this.follow(url, { ...headers, authorization: header });
  }

  /** A Bearer token from the registry's token service, sending credentials only where they belong. */
  private async token(
    ref: ImageReference,
    challenge: { params: Record<string, string> },
    scope: string,
    creds: Credentials | undefined,
  ): Promise<{ token: string; expiresIn: number }> {
    const realm = challenge.params.realm;
    if (!realm)
      throw new RegistryError(`${ref.registry} asked for a Bearer token without saying where to get one`);
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new RegistryError(`${ref.registry} named a token service that is not a URL: ${realm}`);
    }
    const registryUrl = new URL(this.base(ref.registry));
    if (url.protocol !== 'https:' && registryUrl.protocol === 'https:')
      throw new RegistryError(`${ref.registry} named a token service over plain HTTP (${realm}): refused`);
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    url.searchParams.set('scope', challenge.params.scope ?? scope);
    const trusted = [
      registryUrl.host,
      ...(KNOWN_TOKEN_HOSTS[ref.registry] ?? []),
      ...(this.opts.tokenHosts?.[ref.registry] ?? []),
    ];
    const send: Record<string, string> =
      creds && trusted.includes(url.host) ? { authorization: basicAuth(creds) } : {};
    let res: Response;
    try {
      res = await this.follow(url.toString(), send);
    } catch (err) {
      throw new RegistryError(
        `cannot reach ${ref.registry}'s token service ${url.host}: ${errorMessage(err)}`,
      );
    }
    if (!res.ok)
      throw new RegistryError(
        `${ref.registry}'s token service ${url.host} refused (${res.status})${creds && !send.authorization ? `; it is not ${ref.registry}'s own host, so no credentials were sent: list it under registries.token_hosts if it is yours` : ''}`,
        res.status,
      );
    const body = JSON.parse((await readBounded(res, 64 * 1024, 'a token')).toString('utf8')) as {
      token?: string;
      access_token?: string;
      expires_in?: number;
    };
    const token = body.token ?? body.access_token;
    if (!token) throw new RegistryError(`${ref.registry}'s token service sent no token`);
    return { token, expiresIn: body.expires_in ?? 60 };
  }

  /** Fetch, following redirects by hand: `Authorization` is dropped as soon as the host changes. */
  private async follow(url: string, headers: Record<string, string>): Promise<Response> {
    let current = new URL(url);
    let sent = headers;
    for (let hop = 0; ; hop++) {
      const res = await fetch(current, { headers: sent, redirect: 'manual' });
      if (res.status < 300 || res.status >= 400 || res.status === 304) return res;
      const location = res.headers.get('location');
      await res.body?.cancel();
      if (!location || hop >= MAX_REDIRECTS)
        throw new RegistryError(`too many or broken redirects from ${url}`);
      const next = new URL(location, current);
      if (next.host !== current.host)
        sent = Object.fromEntries(Object.entries(sent).filter(([k]) => k !== 'authorization'));
      current = next;
    }
  }
}

/** The whole body, refusing one longer than `max` bytes before it is all in memory. */
async function readBounded(res: Response, max: number, what: string): Promise<Buffer> {
  const declared = Number(res.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > max)
    throw new RegistryError(`${what} is ${declared} bytes, over the ${max}-byte limit: refused`);
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    n += chunk.length;
    if (n > max) throw new RegistryError(`${what} is over the ${max}-byte limit: refused`);
    parts.push(Buffer.from(chunk));
  }
  return Buffer.concat(parts);
}
