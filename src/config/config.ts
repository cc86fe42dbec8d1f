import { existsSync } from 'node:fs';
import { z } from 'zod';
import { DEFAULT_PROTOCOLS, GIT_PROTOCOLS } from '../checkout/git.js';
import { SEED_PRICES, type Prices } from '../cost/model.js';
import { DEFAULT_POLICY_FILE } from '../policy/load-policy.js';
import { parseBytes, parseCpuMillis, parseDurationMs } from '../lib/quantity.js';
import { RuntimeName } from '../jobs/spec.js';
import { parsedField } from '../lib/validation.js';
import { hardLimits, ResourceQuota, type Hard } from '../tenants/quota.js';
import { KubernetesSettings } from '../k8s/settings.js';
import { TenantName, TenantsConfig } from '../tenants/tenant-config.js';
import { loadYamlFile } from '../lib/yaml.js';
import { SYSTEM_CONFIG } from './system-config.js';

const Scheduler = z.strictObject({
  /** What this node offers to jobs' requests (default: its memory less 1Gi, its cores). */
  capacity: z
    .strictObject({
      memory: parsedField(parseBytes).optional(),
      cpus: parsedField(parseCpuMillis).optional(),
    })
    .default({}),
  /** The most jobs of a runtime this node runs at once (default: as capacity allows). */
  concurrency: z.partialRecord(RuntimeName, z.number().int().positive()).default({}),
  /** Attempts for a job whose sandbox fails to start (never for a job's own failure). */
  max_attempts: z.number().int().min(1).max(20).default(3),
  /** How long a node holds a job without a heartbeat before another node may take it. */
  lease: parsedField(parseDurationMs).prefault('30s'),
});
export type SchedulerConfig = z.output<typeof Scheduler>;

/**
 * The most idle sandboxes kept ready per runtime and pool key (image and shape), each made
 * ahead and serving exactly one job; how many a key keeps follows its recent jobs. Unset:
 * `boxcar serve` keeps up to 4 runc containers per key, a one-job command none.
 */
const WarmPools = z.strictObject({
  runc: z.number().int().min(0).max(64).optional(),
  /** Each idle gVisor sandbox holds its sentry and gofer (see `/v1/node` for their memory). */
  gvisor: z.number().int().min(0).max(64).optional(),
  /** Microvms (was `microvm.warm_pool`, still read when this is unset). */
  firecracker: z.number().int().min(0).max(64).optional(),
});
export type WarmPoolsConfig = z.output<typeof WarmPools>;

const Microvm = z.strictObject({
  /**
   * Idle VMs kept restored and warmed per VM shape and image (the base image from the start,
   * then those of the jobs that come), their memory reclaimed by the balloon until a job
   * takes one. 0: every job restores its own. Deprecated: `warm_pools.firecracker` says it now.
   */
  warm_pool: z.number().int().min(0).max(64).default(0),
  /**
   * Lets untrusted jobs run in microVMs on a host where KVM does not boot guests and QEMU
   * emulates with TCG. TCG is no security boundary (QEMU's security policy), so without this
   * untrusted jobs go to the fallback. For development and Boxcar's own tests; every decision
   * and audit record that uses it says so.
   */
  allow_tcg_for_untrusted: z.boolean().default(false),
});
export type MicrovmConfig = z.output<typeof Microvm>;

const Api = z.strictObject({
  /** Live log streams (`logs?follow=true`) one tenant may hold open at once. */
  max_follows_per_tenant: z.number().int().positive().max(10_000).default(32),
});
export type ApiConfig = z.output<typeof Api>;

const Registries = z.strictObject({
  /** Registries (host[:port]) reached over plain HTTP although not on a loopback address. */
  insecure: z.array(z.string().min(1)).default([]),
  /** Credentials per registry (host[:port]; Docker Hub: docker.io). */
  auth: z
    .record(z.string().min(1), z.strictObject({ username: z.string(), password: z.string() }))
    .default({}),
  /** A Docker config.json to read credentials from (default: $DOCKER_CONFIG or ~/.docker). */
  docker_config: z.string().min(1).optional(),
  /** Token services on other hosts that a registry's credentials may be sent to. */
  token_hosts: z.record(z.string().min(1), z.array(z.string().min(1))).default({}),
});
export type RegistriesConfig = z.output<typeof Registries>;

const P2p = z.strictObject({
  /** Share image blobs with the other nodes of the store (default: when the store is PostgreSQL). */
  enabled: z.boolean().optional(),
  /** The unit nodes fetch from the registry or from each other. */
  piece_size: parsedField(parseBytes)
    .prefault('4Mi')
    .refine((n) => n >= 64 * 1024 && n <= 256 * 2 ** 20, 'use a piece size from 64Ki to 256Mi'),
  /** The URL other nodes reach this one at (default: the address `serve --listen` got). */
  advertise: z.url({ protocol: /^https?$/, error: 'use http://HOST:PORT or https://…' }).optional(),
});
export type P2pConfig = z.output<typeof P2p>;

const Prefetch = z.strictObject({
  /** Serving nodes warm the images jobs are about to need. */
  enabled: z.boolean().default(true),
  /** How many images (the seed's `prefetch_limit`). */
  limit: z.number().int().min(0).max(10_000).default(100),
  /** Bytes a second prefetching may take (jobs' own pulls are not capped). */
  bandwidth: parsedField(parseBytes).prefault('25Mi'),
  /** How often the ranking is read again. */
  interval: parsedField(parseDurationMs).prefault('5m'),
  /** How far back jobs count towards an image's rank. */
  window: parsedField(parseDurationMs).prefault('24h'),
});

const Images = z.strictObject({
  /** Pulled images kept on this node; past it the least recently used are pruned. */
  cache_max: parsedField(parseBytes).prefault('20Gi'),
  /** What pulled layers may expand to, per image; past it the pull is refused. */
  max_unpacked: parsedField(parseBytes).prefault('16Gi'),
  max_entries: z.number().int().positive().default(1_000_000),
  /** Peer-to-peer transfers between nodes (the seed's `registry_mirror.p2p`). */
  p2p: P2p.prefault({}),
  /** Prefetch of the most used images (the seed's `prefetch`, `prefetch_limit`). */
  prefetch: Prefetch.prefault({}),
});

/** What jobs start with and leave behind: checkouts, artifacts, caches (see src/workspace). */
const Workspaces = z.strictObject({
  /** Transports a job's `checkout.url` may use (`file` for tests and local repositories). */
  checkout_protocols: z
    .array(z.enum(GIT_PROTOCOLS))
    .min(1)
    .default([...DEFAULT_PROTOCOLS]),
  /** The most one job may keep as artifacts. */
  artifacts_max: parsedField(parseBytes).prefault('1Gi'),
  /** All caches of this node together; past it the least recently used go. */
  caches_max: parsedField(parseBytes).prefault('10Gi'),
});

const HttpUrl = z.url({ protocol: /^https?$/, error: 'use http://HOST[:PORT][/PATH] or https://…' });

const Observability = z.strictObject({
  /** Per-tenant metric series (boxcar_tenant_*): off by default, as tenants are unbounded labels. */
  tenant_labels: z.boolean().default(false),
  /**
   * An OpenTelemetry collector's OTLP/HTTP base URL (e.g. http://127.0.0.1:4318): spans of
   * pipelines and jobs go to its /v1/traces. Default: OTEL_EXPORTER_OTLP_ENDPOINT; without
   * either, no spans are made.
   */
  otlp_endpoint: HttpUrl.optional(),
});

const Repositories = z
  .record(z.string().regex(/^[^/\s]+\/[^/\s]+$/, 'use owner/name or owner/*'), TenantName)
  .default({});

const ConfigFile = z.strictObject({
  /** Tenants: trust ceilings, weights, LimitRange-style limits (see tenants/tenant-config.ts). */
  tenants: TenantsConfig,
  /** A routing policy file (the seed's YAML). */
  policy: z.string().min(1).optional(),
  prices: z
    .strictObject({
      dollars_per_gib_hour: z.number().nonnegative(),
      dollars_per_core_hour: z.number().nonnegative(),
    })
    .optional(),
  /** Kubernetes ResourceQuota manifests; `metadata.namespace` names the tenant. */
  quotas: z.array(ResourceQuota).default([]),
  scheduler: Scheduler.prefault({}),
  microvm: Microvm.prefault({}),
  warm_pools: WarmPools.prefault({}),
  api: Api.prefault({}),
  registries: Registries.prefault({}),
  images: Images.prefault({}),
  workspaces: Workspaces.prefault({}),
  /** Boxcar on a Kubernetes cluster: `boxcar k8s manifests` (see k8s/settings.ts). */
  kubernetes: KubernetesSettings.prefault({}),
  /** Where jobs run: sandboxes on this host (`local`), or Pods on the `kubernetes:` cluster. */
  executor: z.enum(['local', 'kubernetes']).default('local'),
  observability: Observability.prefault({}),
  secrets: z
    .strictObject({
      /**
       * The AES-256 key that encrypts tenants' secrets in the store (default: secrets.key in the
       * state directory, created 0600 on first use). Nodes sharing a store need the same key.
       */
      key_file: z.string().min(1).optional(),
    })
    .prefault({}),
  webhooks: z
    .strictObject({
      /** Boxcar's API as the forge's users reach it: statuses link to `<public_url>/v1/jobs/ID/logs` (default: the address `serve --listen` got). */
      public_url: HttpUrl.optional(),
      github: z
        .strictObject({
          /** The webhook's secret (or BOXCAR_GITHUB_WEBHOOK_SECRET). */
          secret: z.string().min(16, 'use a random secret of at least 16 characters').optional(),
          /** The tenant that jobs from GitHub belong to, unless `repositories` maps their repository. */
          tenant: TenantName.default('github'),
          /** Repository (`owner/name`, or `owner/*`) → tenant. */
          repositories: Repositories,
          /** GitHub's REST API (GitHub Enterprise Server: https://HOST/api/v3). */
          api_url: HttpUrl.default('https://api.github.com'),
          /** A token that may write commit statuses (or BOXCAR_GITHUB_TOKEN); or `app`. */
          token: z.string().min(1).optional(),
          /** A GitHub App installed on the repositories: statuses with its installation tokens. */
          app: z
            .strictObject({
              id: z.number().int().positive(),
              /** The App's private key (PEM), as GitHub gave it. */
              private_key_file: z.string().min(1),
            })
            .optional(),
        })
        .prefault({}),
      gitlab: z
        .strictObject({
          /** The webhook's secret token, sent back as X-Gitlab-Token (or BOXCAR_GITLAB_WEBHOOK_SECRET). */
          secret: z.string().min(16, 'use a random secret of at least 16 characters').optional(),
          /** The tenant that jobs from GitLab belong to, unless `repositories` maps their project. */
          tenant: TenantName.default('gitlab'),
          /** Project path (`group/name`, or `group/*`) → tenant. */
          repositories: Repositories,
          /** The GitLab instance. */
          api_url: HttpUrl.default('https://gitlab.com'),
          /** A token with the api scope, for commit statuses (or BOXCAR_GITLAB_TOKEN). */
          token: z.string().min(1).optional(),
        })
        .prefault({}),
    })
    .prefault({}),
});

export interface WebhooksConfig {
  publicUrl: string | undefined;
  github: {
    secret?: string;
    tenant: string;
    repositories: Record<string, string>;
    apiUrl: string;
    token?: string;
    app?: { id: number; privateKeyFile: string };
  };
  gitlab: {
    secret?: string;
    tenant: string;
    repositories: Record<string, string>;
    apiUrl: string;
    token?: string;
  };
}

export interface Config {
  policyFile: string;
  prices: Prices;
  quotas: Hard[];
  tenants: TenantsConfig;
  scheduler: SchedulerConfig;
  microvm: MicrovmConfig;
  warmPools: WarmPoolsConfig;
  api: ApiConfig;
  registries: RegistriesConfig;
  images: z.output<typeof Images>;
  workspaces: z.output<typeof Workspaces>;
  kubernetes: KubernetesSettings;
  executor: 'local' | 'kubernetes';
  observability: z.output<typeof Observability>;
  /** Where the secrets key is, if not in the state directory. */
  secretsKeyFile: string | undefined;
  webhooks: WebhooksConfig;
}

/**
 * The operator's config file (`--config`, BOXCAR_CONFIG, or /etc/boxcar/config.yaml when it
 * exists). Everything in it is optional; flags override it.
 */
export async function loadConfig(opts: { config?: string; policy?: string }): Promise<Config> {
  const file =
    opts.config ?? process.env.BOXCAR_CONFIG ?? (existsSync(SYSTEM_CONFIG) ? SYSTEM_CONFIG : undefined);
  // An empty file (or one of comments only) is a config that sets nothing.
  const c = file
    ? await loadYamlFile(
        file,
        z.preprocess((v) => v ?? {}, ConfigFile),
      )
    : ConfigFile.parse({});
  return {
    quotas: c.quotas.map(hardLimits),
    tenants: c.tenants,
    scheduler: c.scheduler,
    microvm: c.microvm,
    warmPools: c.warm_pools,
    api: c.api,
    registries: c.registries,
    images: c.images,
    workspaces: c.workspaces,
    kubernetes: c.kubernetes,
    executor: c.executor,
    observability: c.observability,
    secretsKeyFile: c.secrets.key_file,
    webhooks: webhooksConfig(c.webhooks),
    policyFile: opts.policy ?? c.policy ?? DEFAULT_POLICY_FILE,
    prices: c.prices
      ? {
          dollarsPerGiBHour: c.prices.dollars_per_gib_hour,
          dollarsPerCoreHour: c.prices.dollars_per_core_hour,
        }
      : SEED_PRICES,
  };
}

/** The file's webhooks section, secrets and tokens filled in from the environment where not given. */
function webhooksConfig(w: z.output<typeof ConfigFile>['webhooks']): WebhooksConfig {
  const { github, gitlab } = w;
  const env = process.env;
  return {
    publicUrl: w.public_url,
    github: {
      secret: github.secret ?? env.BOXCAR_GITHUB_WEBHOOK_SECRET,
      tenant: github.tenant,
      repositories: github.repositories,
      apiUrl: github.api_url,
      token: github.token ?? env.BOXCAR_GITHUB_TOKEN,
      app: github.app && { id: github.app.id, privateKeyFile: github.app.private_key_file },
    },
    gitlab: {
      secret: gitlab.secret ?? env.BOXCAR_GITLAB_WEBHOOK_SECRET,
      tenant: gitlab.tenant,
      repositories: gitlab.repositories,
      apiUrl: gitlab.api_url,
      token: gitlab.token ?? env.BOXCAR_GITLAB_TOKEN,
    },
  };
}
