import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { KubernetesObject } from '@kubernetes/client-node';
import { executorObjects } from './cluster-scenarios.js';
import { FakeApiServer } from './api-server.js';

/** The executor's cluster names in tests: tenant namespaces `boxcar-<tenant>`, classes by runtime. */
export const TEST_NAMES = {
  namespacePrefix: 'boxcar-',
  classes: { firecracker: 'firecracker', gvisor: 'gvisor' },
};

/** A Node object, Ready or not, with labels. */
export function testNode(name: string, ready = true, labels: Record<string, string> = {}): KubernetesObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels },
    status: { conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
  } as KubernetesObject;
}

export interface TestCluster {
  server: FakeApiServer;
  url: string;
  /** A directory of the test's own, removed after it. */
  dir: string;
  /** A kubeconfig file (in `dir`) for the server. */
  kubeconfig: string;
}

/**
 * The test API server holding what `boxcar k8s manifests` makes for the executor's tenant
 * (`objects`, changed as a test needs) and `nodes` (one Ready node by default), listening,
 * with a kubeconfig for it; the server and the directory are gone after the test.
 */
export async function testCluster(
  t: { after(fn: () => Promise<void>): void },
  opts: { objects?: KubernetesObject[]; nodes?: KubernetesObject[] } = {},
): Promise<TestCluster> {
  const server = new FakeApiServer();
  server.load([...(opts.objects ?? executorObjects(TEST_NAMES)), ...(opts.nodes ?? [testNode('node-1')])]);
  const url = await server.listen();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bx-k8s-'));
  t.after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });
  const kubeconfig = path.join(dir, 'kubeconfig');
  await writeFile(kubeconfig, server.kubeconfig(url));
  return { server, url, dir, kubeconfig };
}
