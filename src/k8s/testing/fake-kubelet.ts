/**
 * The test API server's kubelet: it moves each Pod through Pending → Running → Succeeded or
 * Failed on a script, writing the container's status as a kubelet does (waiting reasons, the
 * terminated state's exit code and reason) and its log lines with their timestamps. What a Pod
 * does comes from its container's environment (`FAKE_KUBELET`, a JSON `KubeletScript`), so a
 * test job says how it behaves the way the mock driver's jobs do; a real cluster ignores it and
 * runs the job's command, which the scenarios write to do the same.
 */

import { z } from 'zod';

export const KubeletScript = z.strictObject({
  /** Lines the container prints, one every `lineEveryMs`. */
  lines: z.array(z.string()).default([]),
  lineEveryMs: z.number().int().min(0).default(0),
  exitCode: z.number().int().default(0),
  /** The kernel's OOM killer ends it (exit 137, reason OOMKilled). */
  oomKilled: z.boolean().default(false),
  /** The image cannot be pulled: the container waits with this reason and never runs. */
  pullFails: z.enum(['ErrImagePull', 'ImagePullBackOff']).optional(),
  /** What the metrics API reports while it runs (as metrics-server writes it, e.g. 250m, 64Mi); none: not scraped yet. */
  usage: z.strictObject({ cpu: z.string(), memory: z.string() }).optional(),
  /** How long the container stays ContainerCreating before it runs. */
  startAfterMs: z.number().int().min(0).default(20),
});
export type KubeletScript = z.output<typeof KubeletScript>;

export const SCRIPT_ENV = 'FAKE_KUBELET';

/** The script in a Pod's container environment; a Pod without one prints nothing and exits 0. */
export function scriptOf(env: readonly { name: string; value?: string }[] | undefined): KubeletScript {
  const raw = env?.find((e) => e.name === SCRIPT_ENV)?.value;
  return KubeletScript.parse(raw ? JSON.parse(raw) : {});
}

/** RFC3339 with nanoseconds, as the kubelet stamps log lines; `seq` orders lines within a millisecond. */
export function logTimestamp(ms: number, seq: number): string {
  const iso = new Date(ms).toISOString(); // …T12:00:00.123Z
  return `${iso.slice(0, 23)}${String(seq % 1_000_000).padStart(6, '0')}Z`;
}
