import { chmod, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig, type Config } from './config/config.js';
import { statePaths, type StatePaths } from './lib/state-paths.js';
import type { Prices } from './cost/model.js';
import { UserError, errnoCode } from './lib/errors.js';
import { ImageStore } from './images/image-store.js';
import { ImagePuller, imagesInUse } from './images/pull.js';
import { dockerConfigCredentials } from './images/registry-auth.js';
import { RegistryClient } from './images/registry-client.js';
import { PeerNode } from './images/peers/peer-node.js';
import { DEFAULT_SWARM, PeerSwarm } from './images/peers/swarm.js';
import { DEFAULT_UNPACK_LIMITS } from './images/unpack.js';
import type { Logger } from './observability/logger.js';
import { loadPolicy } from './policy/load-policy.js';
import type { RoutingPolicy } from './policy/policy-schema.js';
import { hostRuntimes, type RuntimeRegistry } from './runtimes/registry.js';
import { prepareRuntimeState } from './runtimes/shared/runtime-state.js';
import { openStore, storeIsShared } from './store/open-store.js';
import type { Store } from './store/store.js';
import { RegistryLogins } from './tenants/registry-logins.js';
import { Secrets } from './tenants/secrets.js';
import { currentOwner } from './lib/owner.js';
import { Mirrors } from './checkout/mirror.js';
import { Artifacts } from './workspace/artifacts.js';
import { Caches } from './workspace/caches.js';
import { Workspaces } from './workspace/workspaces.js';

/** One local Boxcar: its state directory, store, images, runtime drivers and routing policy. */
export interface Boxcar {
  paths: StatePaths;
  store: Store;
  images: ImageStore;
  /** Pulls registry images into `images`. */
  puller: ImagePuller;
  /** This node among the others of its store, sharing image blobs; when P2P is on. */
  peers: PeerSwarm | undefined;
  runtimes: RuntimeRegistry;
  policy: RoutingPolicy;
  prices: Prices;
  config: Config;
  logger: Logger;
  /** Tenants' secrets: sealed in the store, opened only for trusted jobs. */
  secrets: Secrets;
  /** Tenants' own registry credentials, sealed beside their secrets. */
  registryLogins: RegistryLogins;
  /** Repository mirrors, shared by jobs' checkouts and webhooks' job files. */
  mirrors: Mirrors;
  /** Jobs' workspaces on the host: checkouts, artifacts, caches. */
  workspaces: Workspaces;
  close(): Promise<void>;
}

/**
 * The most idle sandboxes per pool key a serving node keeps when the config names none (each
 * pool sizes itself to recent demand below it): a runc container holds ~1.5 MiB, a gVisor
 * sandbox its sentry and gofer (tens of MiB), so fewer of those.
 */
const SERVE_POOLS = { runc: 4, gvisor: 2 };

export interface BoxcarOptions {
  state?: string;
  config?: string;
  policy?: string;
  /** A store URL (postgres://…); default: SQLite in the state directory. */
  store?: string;
  /** A serving node (`boxcar serve`): warm pools are on unless the config says otherwise. */
  serving?: boolean;
}

/** What a caller may put in place of the host's own parts (tests: the mock runtime). */
export interface BoxcarParts {
  runtimes?: (paths: StatePaths) => RuntimeRegistry;
}

export async function openBoxcar(
  opts: BoxcarOptions,
  logger: Logger,
  parts: BoxcarParts = {},
): Promise<Boxcar> {
  const config = await loadConfig(opts);
  const policy = await loadPolicy(config.policyFile);
  const paths = statePaths(opts.state);
  try {
    // Job logs, bundles and the database are nobody else's business on this host.
    await mkdir(paths.root, { recursive: true, mode: 0o700 });
    await chmod(paths.root, 0o700);
    await mkdir(paths.logs, { recursive: true, mode: 0o700 });
    await mkdir(paths.sandboxes, { recursive: true, mode: 0o700 });
  } catch (err) {
    const code = errnoCode(err);
    throw new UserError(
      `cannot create the state directory ${paths.root} (${code}); run as root or pass --state DIR`,
    );
  }
  const store = await openStore(opts.store, paths);
  if (!parts.runtimes && config.executor === 'local') await prepareRuntimeState(paths, logger);
  const runtimes =
    parts.runtimes?.(paths) ??
    (config.executor === 'kubernetes'
      ? // Loaded only here: the client library is no cost to a node that runs jobs itself.
        (await import('./k8s/executor/registry.js')).kubernetesRuntimes(config.kubernetes, paths, logger)
      : hostRuntimes(
          paths,
          logger,
          {
            warmPool: config.warmPools.firecracker ?? config.microvm.warm_pool,
            allowTcgForUntrusted: config.microvm.allow_tcg_for_untrusted,
          },
          {
            runc: config.warmPools.runc ?? (opts.serving ? SERVE_POOLS.runc : 0),
            gvisor: config.warmPools.gvisor ?? (opts.serving ? SERVE_POOLS.gvisor : 0),
          },
        ));
  const images = new ImageStore(paths, {
    ...DEFAULT_UNPACK_LIMITS,
    maxBytes: config.images.max_unpacked,
    maxEntries: config.images.max_entries,
  });
  const registries = config.registries;
  const client = new RegistryClient({
    insecure: registries.insecure,
    tokenHosts: registries.token_hosts,
    credentials: (registry) =>
      registries.auth[registry] ?? dockerConfigCredentials(registry, registries.docker_config),
  });
  const secrets = new Secrets(store, config.secretsKeyFile ?? path.join(paths.root, 'secrets.key'));
  const puller = new ImagePuller(images, client, logger, {
    maxBytes: config.images.cache_max,
    inUse: () => imagesInUse(store),
  });
  const mirrors = new Mirrors({
    dir: paths.mirrors,
    protocols: config.workspaces.checkout_protocols,
    logger,
  });
  const workspaces = new Workspaces({
    dir: paths.workspaces,
    mirrors,
    artifacts: new Artifacts(paths.artifacts, config.workspaces.artifacts_max),
    caches: new Caches(paths.caches, config.workspaces.caches_max, logger),
    protocols: config.workspaces.checkout_protocols,
    logger,
    getJob: (id) => store.getJob(id),
  });
  const p2p = config.images.p2p;
  let peers: PeerSwarm | undefined;
  if (p2p.enabled ?? storeIsShared(opts.store)) {
    const node = new PeerNode(store, logger, currentOwner(paths.root));
    await node.start();
    peers = new PeerSwarm(node, store, client, logger, { ...DEFAULT_SWARM, pieceSize: p2p.piece_size });
    puller.fetcher = peers;
  }
  return {
    paths,
    store,
    images,
    puller,
    peers,
    runtimes,
    policy,
    prices: config.prices,
    config,
    logger,
    secrets,
    registryLogins: new RegistryLogins(secrets),
    mirrors,
    workspaces,
    close: async () => {
      await peers?.node.stop();
      await runtimes.close();
      await store.close();
    },
  };
}
