/**
 * Boxcar itself on the cluster: its namespace, the ServiceAccount its executor acts as, the one
 * cluster-wide permission it needs, its state volume, and the Deployment and Service of
 * `boxcar serve` (the API and the scheduler).
 */

import type { IDeployment } from 'kubernetes-models/apps/v1';
import type { INamespace, IPersistentVolumeClaim, IService, IServiceAccount } from 'kubernetes-models/v1';
import type { IClusterRole, IClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { UserError } from '../lib/errors.js';
import { MANAGED_BY, RESTRICTED_NAMESPACE } from './labels.js';
import { memoryQuantity } from './quantity.js';
import { restrictedContainerSecurityContext, restrictedPodSecurityContext } from './security.js';
import type { KubernetesSettings } from './settings.js';
import { SERVICE_ACCOUNT } from './tenant-objects.js';

/** The Secret (key `config.yaml`) the operator creates from Boxcar's config file; it may hold credentials, so Boxcar never prints it. */
export const CONFIG_SECRET = 'boxcar-config';
const PORT = 8080;
const STATE_DIR = '/var/lib/boxcar';
const CONFIG_DIR = '/etc/boxcar';
const APP = { 'app.kubernetes.io/name': 'boxcar' } as const;

type BoxcarObject =
  | INamespace
  | IServiceAccount
  | IClusterRole
  | IClusterRoleBinding
  | IPersistentVolumeClaim
  | IDeployment
  | IService;

export function boxcarObjects(k: KubernetesSettings): BoxcarObject[] {
  if (!k.image)
    throw new UserError(
      "kubernetes.image: Boxcar's own container image is not set; set it in the config file, e.g. registry.example.com/boxcar:0.1.0",
    );
  const labels = { ...MANAGED_BY, ...APP };
  const meta = (name: string) => ({ name, namespace: k.namespace, labels });
  const clusterRole = 'boxcar:cluster-reads';
  const hasPlacement = Object.keys(k.boxcar.node_selector).length > 0;
  return [
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: k.namespace, labels: { ...labels, ...RESTRICTED_NAMESPACE } },
    },
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(SERVICE_ACCOUNT) },
    // Cluster-scoped reads, which a Role cannot grant: RuntimeClasses (is a class there, what
    // overhead does it add), Nodes (is one Ready that a class can run on), and Namespaces (the
    // tenants', to find a restarted node's stray Pods in). Everything else is granted per
    // tenant namespace.
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: clusterRole, labels },
      rules: [
        { apiGroups: ['node.k8s.io'], resources: ['runtimeclasses'], verbs: ['get', 'list'] },
        { apiGroups: [''], resources: ['nodes', 'namespaces'], verbs: ['list'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: clusterRole, labels },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterRole },
      subjects: [{ kind: 'ServiceAccount', name: SERVICE_ACCOUNT, namespace: k.namespace }],
    },
    {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: meta('boxcar-state'),
      spec: {
        accessModes: ['ReadWriteOnce'],
        resources: { requests: { storage: memoryQuantity(k.state_volume) } },
      },
    },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: meta('boxcar'),
      spec: {
        // One replica, replaced rather than rolled: the SQLite store has one writer.
        replicas: 1,
        strategy: { type: 'Recreate' },
        selector: { matchLabels: { ...APP } },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: SERVICE_ACCOUNT,
            // Boxcar's own Pod talks to the API server; job Pods never get a token.
            automountServiceAccountToken: true,
            securityContext: restrictedPodSecurityContext(),
            ...(hasPlacement && { nodeSelector: k.boxcar.node_selector }),
            ...(k.boxcar.tolerations.length && { tolerations: k.boxcar.tolerations }),
            containers: [
              {
                name: 'boxcar',
                image: k.image,
                args: ['serve', '--listen', `0.0.0.0:${PORT}`],
                env: [
                  { name: 'BOXCAR_CONFIG', value: `${CONFIG_DIR}/config.yaml` },
                  { name: 'BOXCAR_STATE', value: STATE_DIR },
                ],
                ports: [{ name: 'http', containerPort: PORT }],
                readinessProbe: { httpGet: { path: '/healthz', port: 'http' } },
                livenessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 20 },
                resources: {
                  requests: { memory: '256Mi', cpu: '250m' },
                  limits: { memory: '1Gi' },
                },
                securityContext: restrictedContainerSecurityContext(),
                volumeMounts: [
                  { name: 'state', mountPath: STATE_DIR },
                  { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
                  // The root filesystem is read-only; temporary files go here.
                  { name: 'tmp', mountPath: '/tmp' },
                ],
              },
            ],
            volumes: [
              { name: 'state', persistentVolumeClaim: { claimName: 'boxcar-state' } },
              { name: 'config', secret: { secretName: CONFIG_SECRET } },
              { name: 'tmp', emptyDir: {} },
            ],
          },
        },
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta('boxcar'),
      spec: { selector: { ...APP }, ports: [{ name: 'http', port: PORT, targetPort: 'http' }] },
    },
  ];
}
