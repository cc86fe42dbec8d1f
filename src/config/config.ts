import { existsSync } from 'node:fs';
import { z } from 'zod';
import { SEED_PRICES, type Prices } from '../cost/model.js';
import { DEFAULT_POLICY_FILE } from '../policy/load-policy.js';
import { loadYamlFile } from './yaml.js';

/**
 * The operator's config file (`--config`, BOXCAR_CONFIG, or /etc/boxcar/config.yaml when it
 * exists). Everything in it is optional; flags override it.
 */
export const SYSTEM_CONFIG = '/etc/boxcar/config.yaml';

const ConfigFile = z.strictObject({
  /** A routing policy file (the seed's YAML). */
  policy: z.string().min(1).optional(),
  prices: z
    .strictObject({
      dollars_per_gib_hour: z.number().nonnegative(),
      dollars_per_core_hour: z.number().nonnegative(),
    })
    .optional(),
});

export interface Config {
  policyFile: string;
  prices: Prices;
}

export async function loadConfig(opts: { config?: string; policy?: string }): Promise<Config> {
  const file =
    opts.config ?? process.env.BOXCAR_CONFIG ?? (existsSync(SYSTEM_CONFIG) ? SYSTEM_CONFIG : undefined);
  const c = file ? await loadYamlFile(file, ConfigFile) : {};
  return {
    policyFile: opts.policy ?? c.policy ?? DEFAULT_POLICY_FILE,
    prices: c.prices
      ? {
          dollarsPerGiBHour: c.prices.dollars_per_gib_hour,
          dollarsPerCoreHour: c.prices.dollars_per_core_hour,
        }
      : SEED_PRICES,
  };
}
