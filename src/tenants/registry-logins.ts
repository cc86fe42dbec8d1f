import { UserError } from '../lib/errors.js';
import type { Credentials, RegistryIdentity } from '../images/registry-auth.js';
import type { SecretInfo } from '../store/store.js';
import type { Secrets } from './secrets.js';

/**
 * A tenant's own credentials for a registry, sealed in the store like its secrets (under the
 * scope `registry:<host>`, which no job's repository can name, so no job is ever given them).
 * A tenant's images are pinned and pulled with its own credentials, never with the node's:
 * one tenant's private image in a node's cache is no use to another tenant.
 */
const NAME = 'REGISTRY_LOGIN';
const PREFIX = 'registry:';

const scope = (tenant: string, registry: string) => ({
  tenant,
  repository: `${PREFIX}${registry}`,
  name: NAME,
});

export class RegistryLogins {
  constructor(private readonly secrets: Secrets) {}

  async set(tenant: string, registry: string, creds: Credentials, actor: string): Promise<void> {
    if (!creds.username || !creds.password)
      throw new UserError(`registry login for ${registry}: give a username and a password (or token)`);
    await this.secrets.set(scope(tenant, registry), JSON.stringify(creds), actor);
  }

  remove(tenant: string, registry: string, actor: string): Promise<boolean> {
    return this.secrets.remove(scope(tenant, registry), actor);
  }

  /** The registries a tenant has credentials for. */
  async list(tenant: string): Promise<Array<Pick<SecretInfo, 'updatedAt'> & { registry: string }>> {
    return (await this.secrets.list(tenant))
      .filter((s) => s.name === NAME && s.repository.startsWith(PREFIX))
      .map((s) => ({ registry: s.repository.slice(PREFIX.length), updatedAt: s.updatedAt }));
  }

  /** Who the tenant is to registries: its own credentials, or none. */
  identity(tenant: string): RegistryIdentity {
    return {
      id: `tenant:${tenant}`,
      credentials: async (registry) => {
        const value = await this.secrets.reveal(scope(tenant, registry));
        return value === undefined ? undefined : (JSON.parse(value) as Credentials);
      },
      howToLogIn: (registry) =>
        `give tenant ${tenant} its own credentials for it: \`boxcar registry login --tenant ${tenant} ${registry}\``,
    };
  }
}
