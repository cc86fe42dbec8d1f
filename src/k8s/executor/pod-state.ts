/**
 * What a job's Pod says of its container, read from `status.containerStatuses` as the kubelet
 * writes it: still coming up, running, ended (exit code, OOMKilled), or stuck on an image the
 * nodes cannot pull (ErrImagePull, ImagePullBackOff, InvalidImageName: the job's own input, never
 * worth waiting for).
 */

import type { V1Pod } from '@kubernetes/client-node';
import type { ExitStatus } from '../../runtimes/runtime.js';
import { CONTAINER } from './pod.js';

export const PULL_FAILURES = ['ErrImagePull', 'ImagePullBackOff', 'InvalidImageName', 'ErrImageNeverPull'];

/** What a Pod deleted while its container ran reports: killed (the kubelet's SIGKILL). */
const KILLED: ExitStatus = { exitCode: 137, oomKilled: false };

export type ContainerState =
  | { kind: 'pending'; reason: string }
  | { kind: 'running' }
  | { kind: 'exited'; exit: ExitStatus }
  | { kind: 'pull-failed'; reason: string; message: string };

export function containerState(pod: V1Pod): ContainerState {
  const status = pod.status?.containerStatuses?.find((c) => c.name === CONTAINER);
  const state = status?.state;
  if (state?.terminated)
    return {
      kind: 'exited',
      exit: { exitCode: state.terminated.exitCode, oomKilled: state.terminated.reason === 'OOMKilled' },
    };
  if (state?.running) return { kind: 'running' };
  const waiting = state?.waiting;
  if (waiting?.reason && PULL_FAILURES.includes(waiting.reason))
    return { kind: 'pull-failed', reason: waiting.reason, message: waiting.message ?? '' };
  // The Pod ended before its container ever did (activeDeadlineSeconds, eviction).
  if (pod.status?.phase === 'Failed' || pod.status?.phase === 'Succeeded')
    return { kind: 'exited', exit: KILLED };
  // Not yet on a node: the scheduler says why (Unschedulable: 0/3 nodes are available: …).
  const unscheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
  if (unscheduled) return { kind: 'pending', reason: `${unscheduled.reason}: ${unscheduled.message ?? ''}` };
  return { kind: 'pending', reason: waiting?.reason ?? pod.status?.reason ?? pod.status?.phase ?? 'Pending' };
}

/** A Pod that is gone while its container ran: it was deleted (stopped), and ended killed. */
export const deletedExit = (pod: V1Pod | undefined): ExitStatus => {
  const s = pod && containerState(pod);
  return s?.kind === 'exited' ? s.exit : KILLED;
};
