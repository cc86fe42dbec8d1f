import { mkdir, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { ifExists } from '../../lib/errors.js';
import { run } from '../../lib/exec.js';
import { mountTable, type MountEntry } from '../../lib/proc.js';

/**
 * The host mounts sandboxes are made of (a job's root, its tmpfs, an image's merged layers),
 * made and removed in one place, with mount(8).
 */

/** mount(2) takes at most a page of options; overlayfs' list of lower layers must fit in it. */
const MOUNT_OPTIONS_MAX = 4095;

export async function mountTmpfs(
  target: string,
  opts: { bytes: number; mode: number; noexec?: boolean },
): Promise<void> {
  await mkdir(target, { recursive: true });
  await run('mount', ['-t', 'tmpfs', '-o', tmpfsOptions(opts), 'tmpfs', target]);
}

export function tmpfsOptions(opts: { bytes: number; mode: number; noexec?: boolean }): string {
  const flags = ['nosuid', 'nodev', ...(opts.noexec ? ['noexec'] : [])];
  return [`size=${opts.bytes}`, `mode=${opts.mode.toString(8)}`, ...flags].join(',');
}

/**
 * An overlay of `lower` (top first) at `target`: read-only, or writable into `upper.dir` (with
 * overlayfs' `upper.work` beside it, on the same filesystem).
 */
export async function mountOverlay(
  target: string,
  layers: { lower: readonly string[]; upper?: { dir: string; work: string } },
  flags: readonly string[] = [],
): Promise<void> {
  const { options, cwd } = overlayOptions(target, layers, flags);
  await mkdir(target, { recursive: true });
  await run('mount', ['-t', 'overlay', '-o', options, 'overlay', target], { cwd });
}

/**
 * mount(8)'s options for an overlay, and the directory to run it in: the lower layers are
 * named relative to their common parent, so an image of many layers still fits in the options.
 */
export function overlayOptions(
  target: string,
  layers: { lower: readonly string[]; upper?: { dir: string; work: string } },
  flags: readonly string[] = [],
): { options: string; cwd: string } {
  const { lower, upper } = layers;
  const least = upper ? 1 : 2; // overlayfs' own rule
  if (lower.length < least)
    throw new Error(`an overlay at ${target} needs ${least} lower layers or more, not ${lower.length}`);
  const odd = [...lower, ...(upper ? [upper.dir, upper.work] : [])].find((p) => /[,:\\]/.test(p));
  if (odd) throw new Error(`overlayfs cannot take the path ${odd}: it holds ",", ":" or "\\"`);
  const cwd = commonParent(lower);
  const options = [
    `lowerdir=${lower.map((l) => path.relative(cwd, l)).join(':')}`,
    ...(upper ? [`upperdir=${upper.dir}`, `workdir=${upper.work}`] : []),
    ...flags,
  ].join(',');
  if (options.length > MOUNT_OPTIONS_MAX)
    throw new Error(
      `an overlay of ${lower.length} layers is past what one mount takes (${options.length} bytes of options, at most ${MOUNT_OPTIONS_MAX})`,
    );
  return { options, cwd };
}

/** The deepest directory holding every one of `dirs`. */
function commonParent(dirs: readonly string[]): string {
  const split = dirs.map((d) => path.dirname(d).split(path.sep));
  const first = split[0] ?? [];
  let n = 0;
  while (n < first.length && split.every((s) => s[n] === first[n])) n++;
  return first.slice(0, n).join(path.sep) || path.sep;
}

/**
 * Detaches whatever is mounted at each of `targets` (MNT_DETACH: a process still inside does
 * not keep it in place), in one umount(8); nothing for those where nothing is.
 */
export async function unmount(...targets: string[]): Promise<void> {
  // A target named once for each mount stacked on it, the last made first.
  const doomed = mountTable()
    .reverse()
    .filter((m) => targets.includes(m.target))
    .map((m) => m.target);
  if (doomed.length) await run('umount', ['--lazy', ...doomed]);
}

/** Mounts at or under `dir`. */
export function mountsUnder(dir: string): MountEntry[] {
  return mountTable().filter((m) => m.target === dir || m.target.startsWith(`${dir}/`));
}

/**
 * `fn` on the merged, read-only view of `lower` (top first), mounted under `scratch` for the
 * time it runs, then unmounted, whatever happens.
 */
export async function withMergedLayers<T>(
  lower: readonly string[],
  scratch: string,
  fn: (root: string) => Promise<T>,
): Promise<T> {
  const root = path.join(scratch, 'merged');
  // overlayfs wants two lower layers when it has no upper one: an empty one goes under a single one.
  const empty = path.join(scratch, 'empty');
  await mkdir(empty, { recursive: true });
  try {
    await mountOverlay(root, { lower: lower.length > 1 ? lower : [...lower, empty] });
    return await fn(root);
  } finally {
    await unmount(root); // nothing when the mount itself failed
    await ifExists(rmdir(root)); // never a recursive removal: a mount point may still hold an image
    await rmdir(empty);
  }
}
