/**
 * Whether the cluster can run a runtime's Pods, judged before any is sent: its RuntimeClass
 * exists, and at least one Ready node carries the class's `scheduling.nodeSelector` (a class
 * whose nodes are all gone or NotReady would leave every Pod Pending). runc names no class: any
 * Ready node will do.
 */

import type { V1Node } from '@kubernetes/client-node';
import { errorMessage } from '../../lib/errors.js';
import type { RuntimeName } from '../../jobs/spec.js';
import type { Fingerprint } from '../../runtimes/runtime.js';
import { isStatus, type KubeCluster } from './cluster.js';

const ready = (n: V1Node) =>
  n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

const selectorText = (s: Record<string, string>) =>
  Object.entries(s)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');

export async function clusterFingerprint(
  cluster: KubeCluster,
  runtime: RuntimeName,
  runtimeClassName: string | undefined,
): Promise<Fingerprint> {
  const details: Record<string, string> = { server: cluster.server };
  const unusable = (reason: string): Fingerprint => ({ runtime, usable: false, reason, details });
  try {
    let selector: Record<string, string> = {};
    if (runtimeClassName) {
      details.runtimeClass = runtimeClassName;
      try {
        const rc = await cluster.call(`reading RuntimeClass ${runtimeClassName}`, () =>
          cluster.node.readRuntimeClass({ name: runtimeClassName }),
        );
        details.handler = rc.handler;
        selector = rc.scheduling?.nodeSelector ?? {};
      } catch (err) {
        if (!isStatus(err, 404)) throw err;
        return unusable(
          `the cluster has no RuntimeClass ${runtimeClassName}; apply \`boxcar k8s manifests\` (or set kubernetes.runtime_classes)`,
        );
      }
    }
    const labelSelector = Object.keys(selector).length ? selectorText(selector) : undefined;
    const nodes = await cluster.call('listing nodes', () => cluster.core.listNode({ labelSelector }));
    const usable = nodes.items.filter(ready);
    details.readyNodes = String(usable.length);
    if (!usable.length)
      return unusable(
        labelSelector
          ? `no Ready node carries ${labelSelector} (RuntimeClass ${runtimeClassName}'s nodeSelector): its Pods would stay Pending`
          : 'the cluster has no Ready node',
      );
    const where = runtimeClassName ? `RuntimeClass ${runtimeClassName}` : "the nodes' default runtime";
    return {
      runtime,
      usable: true,
      reason: `Pods with ${where} on ${usable.length} Ready node(s) of ${cluster.server}`,
      details,
    };
  } catch (err) {
    return unusable(`the cluster at ${cluster.server} did not answer: ${errorMessage(err)}`);
  }
}
