import { chmod, copyFile, mkdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../runtimes/shared/exec.js';
import { sha256File } from './digest.js';
import { withLock, writeFileAtomic } from './fs-util.js';
import { BASE_IMAGE_REF } from './image.js';
import { type ImageStore, type Manifest, MEDIA } from './image-store.js';

/**
 * The built-in image: Debian's static busybox, every applet linked, and the directories jobs
 * mount over. Built locally and deterministically (sorted tar, fixed times and owners), keyed by
 * the busybox binary's digest, so building again is a no-op and two nodes get the same digest.
 */
const BUILDER_VERSION = '1';
const INPUT_ANNOTATION = 'org.boxcar.base.input';

export const BUSYBOX = '/bin/busybox';

export interface BaseImageResult {
  manifestDigest: string;
  built: boolean;
}

/**
 * The input key: busybox's digest. Hashing 2 MB costs ~5 ms per job start, so the digest is
 * remembered beside the store with the file's identity (inode, size, mtime) and recomputed
 * only when those change (a package upgrade replaces the file).
 */
async function inputKey(store: ImageStore, busybox: string): Promise<string> {
  let st;
  try {
    st = await stat(busybox);
  } catch (err) {
    throw new Error(
      `the built-in image needs ${busybox}: install the Debian package busybox-static (${(err as Error).message})`,
      { cause: err },
    );
  }
  const identity = `${busybox}:${st.ino}:${st.size}:${st.mtimeMs}`;
  const stampFile = store.metaPath('base-input.json');
  try {
    const stamp = JSON.parse(await readFile(stampFile, 'utf8')) as { identity: string; key: string };
    if (stamp.identity === identity) return stamp.key;
  } catch (err) {
    // Missing or unreadable stamp: recompute below.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && !(err instanceof SyntaxError)) throw err;
  }
  const key = `${await sha256File(busybox)}+builder${BUILDER_VERSION}`;
  await writeFileAtomic(stampFile, JSON.stringify({ identity, key }));
  return key;
}

export async function ensureBaseImage(store: ImageStore, busybox = BUSYBOX): Promise<BaseImageResult> {
  await store.init();
  const input = await inputKey(store, busybox);
  const current = async () => {
    const entry = await store.lookup(BASE_IMAGE_REF);
    return entry && entry.annotations?.[INPUT_ANNOTATION] === input && (await store.hasBlob(entry.digest))
      ? entry.digest
      : undefined;
  };
  const existing = await current();
  if (existing) return { manifestDigest: existing, built: false };
  return withLock(store.lockPath('base-image'), async () => {
    const raced = await current();
    if (raced) return { manifestDigest: raced, built: false };
    const manifest = await build(store, busybox, input);
    return { manifestDigest: manifest, built: true };
  });
}

async function build(store: ImageStore, busybox: string, input: string): Promise<string> {
  const work = await store.scratchDir();
  try {
    const rootfs = path.join(work, 'rootfs');
    for (const d of [
      'bin',
      'sbin',
      'usr/bin',
      'usr/sbin',
      'etc',
      'root',
      'home',
      'proc',
      'sys',
      'dev',
      'tmp',
      'workspace',
      'var/tmp',
      'run',
    ]) {
      await mkdir(path.join(rootfs, d), { recursive: true });
    }
    await chmod(path.join(rootfs, 'tmp'), 0o1777);
    await copyFile(busybox, path.join(rootfs, 'bin/busybox'));
    await chmod(path.join(rootfs, 'bin/busybox'), 0o755);
    const { stdout } = await run(busybox, ['--list-full']);
    for (const applet of stdout
      .split('\n')
      .map((s) => s.trim())
      .filter(Boolean)) {
      if (applet === 'bin/busybox') continue;
      const target = path.relative(path.dirname(applet), 'bin/busybox');
      await mkdir(path.join(rootfs, path.dirname(applet)), { recursive: true });
      await symlink(target, path.join(rootfs, applet));
    }
    await writeFile(
      path.join(rootfs, 'etc/passwd'),
      'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
    );
    await writeFile(path.join(rootfs, 'etc/group'), 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n');
    await writeFile(path.join(rootfs, 'etc/hosts'), '127.0.0.1\tlocalhost\n::1\tlocalhost\n');
    await writeFile(
      path.join(rootfs, 'etc/nsswitch.conf'),
      'passwd: files\ngroup: files\nhosts: files dns\n',
    );

    const layerFile = path.join(work, 'layer.tar');
    await run('tar', [
      '--create', '--file', layerFile, '--directory', rootfs,
      '--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner',
      '--format=posix', '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime', '.',
    ], { timeoutMs: 120_000 }); // prettier-ignore
    const { stdout: bbVersion } = await run(busybox, ['--help']);
    const layer = await store.putBlobFile(layerFile, MEDIA.layerTar);
    const arch = process.arch === 'x64' ? 'amd64' : process.arch;
    const config = await store.putBlob(
      JSON.stringify({
        architecture: arch,
        os: 'linux',
        config: { Env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['sh'], WorkingDir: '/workspace' },
        rootfs: { type: 'layers', diff_ids: [layer.digest] },
      }),
      MEDIA.config,
    );
    const manifest: Manifest = {
      schemaVersion: 2,
      mediaType: MEDIA.manifest,
      config,
      layers: [layer],
      annotations: { 'org.opencontainers.image.description': (bbVersion.split('\n')[0] ?? 'busybox').trim() },
    };
    const desc = await store.putBlob(JSON.stringify(manifest), MEDIA.manifest);
    await store.tag(BASE_IMAGE_REF, desc, { [INPUT_ANNOTATION]: input });
    return desc.digest;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
