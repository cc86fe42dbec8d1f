import { mkdir } from 'node:fs/promises';
import { statePaths, type StatePaths } from './config/paths.js';
import { UserError } from './errors.js';
import { ImageStore } from './images/image-store.js';
import type { Logger } from './observability/logger.js';
import { hostRuntimes, type RuntimeRegistry } from './runtimes/registry.js';
import { SqliteStore } from './store/sqlite/sqlite-store.js';
import type { Store } from './store/store.js';

/** One local Boxcar: its state directory, store, images and runtime drivers. */
export interface Boxcar {
  paths: StatePaths;
  store: Store;
  images: ImageStore;
  runtimes: RuntimeRegistry;
  logger: Logger;
  close(): Promise<void>;
}

export async function openBoxcar(stateDir: string | undefined, logger: Logger): Promise<Boxcar> {
  const paths = statePaths(stateDir);
  try {
    await mkdir(paths.root, { recursive: true });
    await mkdir(paths.logs, { recursive: true });
    await mkdir(paths.sandboxes, { recursive: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UserError(
      `cannot create the state directory ${paths.root} (${code}); run as root or pass --state DIR`,
    );
  }
  const store = new SqliteStore(paths.db);
  const images = new ImageStore(paths);
  return {
    paths,
    store,
    images,
    runtimes: hostRuntimes(paths, logger),
    logger,
    close: () => store.close(),
  };
}
