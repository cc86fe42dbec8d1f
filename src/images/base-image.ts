import { chmod, copyFile, mkdir, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../lib/exec.js';
import { sha256File } from '../lib/digest.js';
import { writeFileAtomic, readJsonCache } from '../lib/fs-util.js';
import { BASE_IMAGE_REF } from './image.js';
import type { ImageStore } from './image-store.js';
import { ensureLocalImage, type LocalImageRecipe, type LocalImageResult } from './local-image.js';
import { errorMessage } from '../lib/errors.js';

const BUILDER_VERSION = '2';

export const BUSYBOX = '/bin/busybox';

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
      `the built-in image needs ${busybox}: install the Debian package busybox-static (${errorMessage(err)})`,
      { cause: err },
    );
  }
  const identity = `${busybox}:${st.ino}:${st.size}:${st.mtimeMs}`;
  const stampFile = store.metaPath('base-input.json');
  const stamp = await readJsonCache<{ identity: string; key: string }>(stampFile);
  if (stamp?.identity === identity) return stamp.key;
  const key = `${await sha256File(busybox)}+builder${BUILDER_VERSION}`;
  await writeFileAtomic(stampFile, JSON.stringify({ identity, key }));
  return key;
}

/**
 * The built-in image: Debian's static busybox, every applet linked, and the directories jobs
 * mount over. Built locally and deterministically (sorted tar, fixed times and owners), keyed by
 * the busybox binary's digest, so building again is a no-op and two nodes get the same digest.
 */
export async function ensureBaseImage(store: ImageStore, busybox = BUSYBOX): Promise<LocalImageResult> {
  return ensureLocalImage(store, await baseImageRecipe(store, busybox));
}

export async function baseImageRecipe(store: ImageStore, busybox = BUSYBOX): Promise<LocalImageRecipe> {
  await store.init();
  return {
    ref: BASE_IMAGE_REF,
    inputKey: await inputKey(store, busybox),
    description: async () => ((await run(busybox, ['--help'])).stdout.split('\n')[0] ?? 'busybox').trim(),
    populate: (rootfs) => populateBusybox(rootfs, busybox),
  };
}

/** Debian's static busybox with every applet linked, and the directories jobs mount over. */
export async function populateBusybox(rootfs: string, busybox = BUSYBOX): Promise<void> {
  const dirs = [
    'bin',
    'sbin',
    'usr/bin',
    'usr/sbin',
    'usr/local/bin',
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
    'mnt',
  ];
  for (const d of dirs) await mkdir(path.join(rootfs, d), { recursive: true });
  await chmod(path.join(rootfs, 'tmp'), 0o1777);
  await copyFile(busybox, path.join(rootfs, 'bin/busybox'));
  await chmod(path.join(rootfs, 'bin/busybox'), 0o755);
  const { stdout } = await run(busybox, ['--list-full']);
  for (const applet of stdout
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean)) {
    if (applet === 'bin/busybox') continue;
    await mkdir(path.join(rootfs, path.dirname(applet)), { recursive: true });
    await symlink(path.relative(path.dirname(applet), 'bin/busybox'), path.join(rootfs, applet));
  }
  await writeFile(
    path.join(rootfs, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
  );
  await writeFile(path.join(rootfs, 'etc/group'), 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n');
  await writeFile(path.join(rootfs, 'etc/hosts'), '127.0.0.1\tlocalhost\n::1\tlocalhost\n');
  await writeFile(path.join(rootfs, 'etc/nsswitch.conf'), 'passwd: files\ngroup: files\nhosts: files dns\n');
}
