import path from 'node:path';

/** Where Boxcar keeps its state: one directory, so a test or a second node is one `--state` away. */
export interface StatePaths {
  root: string;
  db: string;
  /** An OCI image layout (oci-layout, index.json, blobs/sha256/…). */
  images: string;
  /** Unpacked image layers, one directory each, shared read-only by every image that has them. */
  layers: string;
  /** The sandbox ledger (`<id>.handle`), microVMs' directories (their disks), sandboxes' logs. */
  sandboxes: string;
  /**
   * Runtime state, on a tmpfs of Boxcar's own (runtime-state.ts): it lives as long as the
   * host's containers do, and the ~20 files each container's start makes and removes cost
   * ext4 a sixth of a node's CPU per start here.
   */
  run: string;
  /** One directory per container (runc, gVisor): OCI bundle, conmon's files, the root's mounts. */
  containers: string;
  /** Job output, one size-capped file per job. */
  logs: string;
  /** `runc --root`: container state, kept apart from any other runc user on the host. */
  runcRoot: string;
  /** `runsc --root`, likewise. */
  runscRoot: string;
  /** MicroVM artefacts: guest kernel and initramfs, image disks, snapshots. */
  vm: string;
  /** Bare git mirrors, one per repository, written by Boxcar alone. */
  mirrors: string;
  /** Jobs' workspaces on the host (a tmpfs each), for jobs that start with files or leave some. */
  workspaces: string;
  /** Artifacts jobs kept, by digest. */
  artifacts: string;
  /** Dependency caches, in a trusted and an untrusted namespace. */
  caches: string;
}

export function defaultStateDir(): string {
  return process.env.BOXCAR_STATE ?? '/var/lib/boxcar';
}

export function statePaths(root: string = defaultStateDir()): StatePaths {
  const abs = path.resolve(root);
  return {
    root: abs,
    db: path.join(abs, 'boxcar.db'),
    images: path.join(abs, 'images'),
    layers: path.join(abs, 'images', 'layers'),
    sandboxes: path.join(abs, 'sandboxes'),
    run: path.join(abs, 'run'),
    containers: path.join(abs, 'run', 'containers'),
    logs: path.join(abs, 'logs'),
    runcRoot: path.join(abs, 'run', 'runc'),
    runscRoot: path.join(abs, 'run', 'runsc'),
    vm: path.join(abs, 'vm'),
    mirrors: path.join(abs, 'git'),
    workspaces: path.join(abs, 'workspaces'),
    artifacts: path.join(abs, 'artifacts'),
    caches: path.join(abs, 'caches'),
  };
}
