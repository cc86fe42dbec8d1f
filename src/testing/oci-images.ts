import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { run } from '../lib/exec.js';

/**
 * Images for tests, built here byte by byte (hostile ones included: tar entries `tar` itself
 * would refuse to write) into an OCI image layout, and pushed to a registry with skopeo, the
 * tool a user would use.
 */
export interface TestEntry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  content?: string | Buffer;
  linkname?: string;
  mode?: number;
}

export type Compression = 'gzip' | 'zstd' | 'none';

export async function tarOf(entries: TestEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const parts: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack) parts.push(chunk);
  })();
  for (const e of entries) {
    const type = e.type ?? 'file';
    const body = type === 'file' ? Buffer.from(e.content ?? '') : undefined;
    await new Promise<void>((resolve, reject) =>
      pack.entry(
        {
          name: e.name,
          type,
          mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644),
          linkname: e.linkname,
          size: body?.length ?? 0,
          uid: 0,
          gid: 0,
          mtime: new Date(0),
          devmajor: type.endsWith('device') ? 1 : undefined,
          devminor: type.endsWith('device') ? 3 : undefined,
        },
        body,
        (err) => (err ? reject(err) : resolve()),
      ),
    );
  }
  pack.finalize();
  await collected;
  return Buffer.concat(parts);
}

export async function compress(data: Buffer, how: Compression, scratch: string): Promise<Buffer> {
  if (how === 'gzip') return gzipSync(data);
  if (how === 'none') return data;
  const file = path.join(scratch, `zstd-${createHash('sha256').update(data).digest('hex').slice(0, 12)}`);
  await writeFile(file, data);
  await run('zstd', ['-q', '-f', '-19', file, '-o', `${file}.zst`]);
  return readFile(`${file}.zst`);
}

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const LAYER_MEDIA: Record<Compression, string> = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar',
};

/**
 * Writes an OCI image layout at `dir` holding one image tagged `tag`, its layers in order (each
 * a list of entries, or raw layer bytes as they should be sent), and returns the manifest.
 */
export async function writeLayout(
  dir: string,
  tag: string,
  layers: Array<TestEntry[] | { raw: Buffer; diffId?: string; mediaType?: string }>,
  opts: { compression?: Compression; cmd?: string[] } = {},
): Promise<{ manifestDigest: string; layerDigests: string[] }> {
  const blobs = path.join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const put = async (data: Buffer | string) => {
    const d = sha(data);
    await writeFile(path.join(blobs, d.slice(7)), data);
    return d;
  };
  const how = opts.compression ?? 'gzip';
  const descs = [];
  const diffIds = [];
  for (const layer of layers) {
    if (Array.isArray(layer)) {
      const plain = await tarOf(layer);
      const body = await compress(plain, how, dir);
      descs.push({ mediaType: LAYER_MEDIA[how], digest: await put(body), size: body.length });
      diffIds.push(sha(plain));
    } else {
      descs.push({
        mediaType: layer.mediaType ?? LAYER_MEDIA.gzip,
        digest: await put(layer.raw),
        size: layer.raw.length,
      });
      diffIds.push(layer.diffId ?? sha(layer.raw));
    }
  }
  const config = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: opts.cmd ?? ['sh'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
  });
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: {
      mediaType: 'application/vnd.oci.image.config.v1+json',
      digest: await put(config),
      size: Buffer.byteLength(config),
    },
    layers: descs,
  });
  const manifestDigest = await put(manifest);
  await writeFile(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: manifestDigest,
          size: Buffer.byteLength(manifest),
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
  return { manifestDigest, layerDigests: descs.map((d) => d.digest) };
}

/** Pushes the layout's image to `dest` (host/repo:tag) with skopeo, blobs as they are. */
export async function pushLayout(dir: string, tag: string, dest: string, creds?: string): Promise<void> {
  await run(
    'skopeo',
    [
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      ...(creds ? ['--dest-creds', creds] : []),
      '--preserve-digests',
      `oci:${dir}:${tag}`,
      `docker://${dest}`,
    ],
    { timeoutMs: 120_000, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir } },
  );
}

/**
 * Pushes an OCI artifact (a config and layers of any media type, e.g. a WASM module) to
 * `host/repo:tag` over the distribution API, as `oras push` would: skopeo copies images only.
 * Returns the manifest's digest.
 */
export async function pushArtifact(
  host: string,
  repoTag: string,
  artifact: {
    config: { mediaType: string; data: Buffer };
    layers: Array<{ mediaType: string; data: Buffer }>;
  },
): Promise<string> {
  const [repo, tag] = repoTag.split(':') as [string, string];
  const put = async (data: Buffer) => {
    const digest = sha(data);
    const start = await fetch(`http://${host}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    if (start.status !== 202) throw new Error(`starting an upload to ${host}: ${start.status}`);
    const location = new URL(start.headers.get('location') ?? '', `http://${host}`);
    location.searchParams.set('digest', digest);
    const done = await fetch(location, {
      method: 'PUT',
      body: new Uint8Array(data),
      headers: { 'content-type': 'application/octet-stream' },
    });
    if (done.status !== 201) throw new Error(`uploading ${digest} to ${host}: ${done.status}`);
    return { digest, size: data.length };
  };
  const config = { mediaType: artifact.config.mediaType, ...(await put(artifact.config.data)) };
  const layers = [];
  for (const l of artifact.layers) layers.push({ mediaType: l.mediaType, ...(await put(l.data)) });
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config,
    layers,
  });
  const res = await fetch(`http://${host}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    body: manifest,
    headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  if (res.status !== 201)
    throw new Error(`pushing the manifest to ${host}: ${res.status} ${await res.text()}`);
  return sha(manifest);
}
