import { UserError } from '../lib/errors.js';
import type { JobRecord, SecretInfo, SecretScope, Store } from '../store/store.js';
import { SecretBox } from './secret-box.js';

export const SECRET_ENV_PREFIX = 'BOXCAR_SECRET_';
/** Shorter values cannot be masked in output without masking ordinary text (GitLab's rule too). */
export const MIN_SECRET_LENGTH = 8;
const MAX_SECRET_BYTES = 64 * 1024;
export const SECRET_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

type JobScope = Pick<JobRecord, 'tenant' | 'decision' | 'origin' | 'spec'>;

/**
 * Tenants' secrets: set and removed by the operator (names audited, values sealed), given only
 * to trusted jobs, each job only its own tenant's (and, for a job from a verified repository,
 * that repository's, which win over the tenant's of the same name). The operator's own CLI
 * jobs take theirs from `BOXCAR_SECRET_<NAME>` in boxcar's environment instead.
 */
export class Secrets {
  private sealer: Promise<SecretBox> | undefined;

  constructor(
    private readonly store: Store,
    /** The key file; created on the first `set`. */
    private readonly keyFile: string,
  ) {}

  private box(create: boolean): Promise<SecretBox> {
    if (create) return SecretBox.open(this.keyFile, true);
    this.sealer ??= SecretBox.open(this.keyFile, false).catch((err: unknown) => {
      this.sealer = undefined; // a key put in place later is picked up
      throw err;
    });
    return this.sealer;
  }

  async set(scope: SecretScope, value: string, actor: string): Promise<void> {
    if (!SECRET_NAME.test(scope.name))
      throw new UserError(
        `secret name ${scope.name}: use letters, digits and _ (an environment variable name)`,
      );
    if (value.length < MIN_SECRET_LENGTH)
      throw new UserError(
        `secret ${scope.name}: its value is ${value.length} characters; use at least ${MIN_SECRET_LENGTH}, or it cannot be masked in job output`,
      );
    if (Buffer.byteLength(value) > MAX_SECRET_BYTES)
      throw new UserError(
        `secret ${scope.name}: its value is over ${MAX_SECRET_BYTES} bytes; store a file's key, not the file`,
      );
    await this.store.putSecret((await this.box(true)).seal(scope, value), actor);
  }

  remove(scope: SecretScope, actor: string): Promise<boolean> {
    return this.store.deleteSecret(scope, actor);
  }

  list(tenant: string): Promise<SecretInfo[]> {
    return this.store.listSecrets(tenant);
  }

  /** One secret's value, exactly that scope's; undefined when it is not set. */
  async reveal(scope: SecretScope): Promise<string | undefined> {
    const sealed = await this.store.secretsFor(scope.tenant, [scope.repository], [scope.name]);
    const own = sealed.find((s) => s.repository === scope.repository);
    return own && (await this.box(false)).unseal(own);
  }

  /** The names a job of this tenant (and repository) asks for that are not set. */
  async missing(tenant: string, repository: string | undefined, names: string[]): Promise<string[]> {
    const found = await this.store.secretsFor(tenant, repository ? [repository] : [], names);
    return names.filter((n) => !found.some((s) => s.name === n));
  }

  /** The values a job gets: none unless it is trusted. */
  async forJob(job: JobScope): Promise<Record<string, string>> {
    if (job.decision.trust !== 'trusted' || job.spec.secrets.length === 0) return {};
    if (job.origin.via === 'cli') return fromEnvironment(job.spec.secrets);
    const repository = job.origin.repository;
    const sealed = await this.store.secretsFor(job.tenant, repository ? [repository] : [], job.spec.secrets);
    const box = await this.box(false);
    const out: Record<string, string> = {};
    for (const name of job.spec.secrets) {
      const own =
        sealed.find((s) => s.name === name && s.repository !== '') ?? sealed.find((s) => s.name === name);
      if (!own)
        throw new UserError(
          `secret ${name} is not set for tenant ${job.tenant}${repository ? ` or repository ${repository}` : ''}; set it with \`boxcar secret set --tenant ${job.tenant} ${name}\``,
        );
      out[name] = box.unseal(own);
    }
    return out;
  }
}

/** The operator's own secrets, for `boxcar run` and `boxcar pipeline`. */
function fromEnvironment(names: string[], env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of names) {
    const value = env[`${SECRET_ENV_PREFIX}${name}`];
    if (value === undefined)
      throw new UserError(
        `secret ${name} is not configured: set ${SECRET_ENV_PREFIX}${name} in boxcar's environment`,
      );
    out[name] = value;
  }
  return out;
}
