import { UserError } from '../errors.js';

/**
 * Secret values for a trusted job, from the Boxcar process's environment
 * (`BOXCAR_SECRET_<NAME>`). They go straight into the sandbox and are never stored.
 */
export const SECRET_ENV_PREFIX = 'BOXCAR_SECRET_';

export function resolveSecrets(
  names: string[],
  env: NodeJS.ProcessEnv = process.env,
): Record<string, string> {
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
