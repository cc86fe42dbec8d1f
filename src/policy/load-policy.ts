import { fileURLToPath } from 'node:url';
import { loadYamlFile } from '../lib/yaml.js';
import { PolicyFile, type RoutingPolicy } from './policy-schema.js';

/** The policy Boxcar ships with (`policies/default.yaml`). */
export const DEFAULT_POLICY_FILE = fileURLToPath(new URL('../../../policies/default.yaml', import.meta.url));

export async function loadPolicy(file: string = DEFAULT_POLICY_FILE): Promise<RoutingPolicy> {
  return (await loadYamlFile(file, PolicyFile)).routing_policy;
}
