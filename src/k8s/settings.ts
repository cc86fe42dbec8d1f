/**
 * The `kubernetes:` section of Boxcar's config file: how Boxcar's objects are named and placed
 * on a cluster. Keys are Boxcar's (snake_case); where a value is a Kubernetes object's own part
 * (tolerations), it is written as Kubernetes writes it.
 */

import { z } from 'zod';
import { parseBytes, parseCpuMillis } from '../lib/quantity.js';
import { parsedField } from '../lib/validation.js';

/** A DNS label (RFC 1123): what namespace names and their prefixes are made of. */
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/** A label's value (empty, or up to 63 of letters, digits, "-", "_" and "."). */
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
/** A label's key: an optional DNS-subdomain prefix and "/", then a name. */
const LABEL_KEY =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/** A toleration as Kubernetes writes it, refused here where the API server would refuse it. */
const Toleration = z
  .strictObject({
    key: z.string().regex(LABEL_KEY, 'use a label key, e.g. boxcar.dev/sandbox').optional(),
    operator: z.enum(['Exists', 'Equal']).optional(),
    value: z.string().max(63).regex(LABEL_VALUE, 'use a label value, e.g. firecracker').optional(),
    effect: z.enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute']).optional(),
    tolerationSeconds: z.number().int().optional(),
  })
  .superRefine((t, ctx) => {
    if (t.operator === 'Exists' && t.value)
      ctx.addIssue({
        code: 'custom',
        path: ['value'],
        message: 'operator Exists takes no value; remove it or use Equal',
      });
    if (!t.key && t.operator !== 'Exists')
      ctx.addIssue({
        code: 'custom',
        path: ['operator'],
        message: 'without a key, the operator must be Exists',
      });
    if (t.tolerationSeconds !== undefined && t.effect !== 'NoExecute')
      ctx.addIssue({
        code: 'custom',
        path: ['tolerationSeconds'],
        message: 'only a NoExecute toleration has tolerationSeconds; set effect: NoExecute or remove it',
      });
  });

const Placement = {
  /** Labels a node must carry (RuntimeClass `scheduling.nodeSelector`, a Pod's `nodeSelector`). */
  node_selector: z
    .record(z.string(), z.string().max(63).regex(LABEL_VALUE, 'use a label value, e.g. firecracker'))
    // A record's own key check says only "Invalid key in record"; this names the fix.
    .superRefine((selector, ctx) => {
      for (const key of Object.keys(selector))
        if (!LABEL_KEY.test(key))
          ctx.addIssue({
            code: 'custom',
            path: [key],
            message: 'is not a label key; use e.g. boxcar.dev/sandbox',
          });
    })
    .default({}),
  /** Taints the Pods tolerate, e.g. those that keep other workloads off sandbox nodes. */
  tolerations: z.array(Toleration).default([]),
};

const RuntimeClassSettings = (runtime: string, handler: string) =>
  z
    .strictObject({
      /** The RuntimeClass's name: what the executor's Pods name in runtimeClassName. */
      name: z
        .string()
        .regex(DNS_LABEL, 'a RuntimeClass name is a DNS label, e.g. gvisor')
        .max(63)
        .default(runtime),
      /** The CRI handler the nodes' containerd or CRI-O knows this runtime by. */
      handler: z
        .string()
        .regex(DNS_LABEL, 'a handler is a DNS label, e.g. kata-fc or runsc')
        .default(handler),
      ...Placement,
      /**
       * `overhead.podFixed`, when measured on the cluster's own nodes; default: the overhead
       * Boxcar's own driver for this runtime accounts (see overhead.ts).
       */
      overhead: z
        .strictObject({
          memory: parsedField(parseBytes).optional(),
          cpu: parsedField(parseCpuMillis).optional(),
        })
        .default({}),
    })
    .prefault({});

export const KubernetesSettings = z.strictObject({
  /**
   * The kubeconfig file of the cluster the `kubernetes` executor runs jobs on (its current
   * context); absent: the credentials of the Pod Boxcar runs in (in-cluster).
   */
  kubeconfig: z.string().min(1).optional(),
  /**
   * What the executor's Pods run for a job that names no image (Boxcar's built-in base image is
   * on its own node, not in a registry the cluster can pull from), e.g. busybox:1.37.
   */
  default_image: z.string().min(1).optional(),
  /** Where Boxcar itself runs (its Deployment, Service and ServiceAccount). */
  namespace: z.string().regex(DNS_LABEL, 'use a namespace name, e.g. boxcar').max(63).default('boxcar'),
  /** Tenant `t`'s jobs run in namespace `<prefix>t`. */
  namespace_prefix: z
    .string()
    .regex(/^([a-z0-9][a-z0-9-]*)?$/, 'use lower-case letters, digits and "-", e.g. boxcar-')
    .max(30)
    .default('boxcar-'),
  /** Boxcar's own container image, for its Deployment (an image whose entrypoint is `boxcar`). */
  image: z.string().min(1).optional(),
  /** Where Boxcar's own Pod may run. */
  boxcar: z.strictObject({ ...Placement }).prefault({}),
  /** The size of the volume holding Boxcar's state (its SQLite store, secrets key, caches). */
  state_volume: parsedField(parseBytes).prefault('10Gi'),
  /** The sandboxed runtimes' RuntimeClasses; runc jobs use the nodes' default runtime. */
  runtime_classes: z
    .strictObject({
      firecracker: RuntimeClassSettings('firecracker', 'firecracker'),
      gvisor: RuntimeClassSettings('gvisor', 'runsc'),
    })
    .prefault({}),
});
export type KubernetesSettings = z.output<typeof KubernetesSettings>;
export type RuntimeClassSettings = KubernetesSettings['runtime_classes']['firecracker'];
