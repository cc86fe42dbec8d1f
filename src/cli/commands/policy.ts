import { readFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { Option, type Command } from 'commander';
import { loadConfig, type Config } from '../../config/config.js';
import { assumedFingerprint } from '../../runtimes/registry.js';
import { UserError, errnoCode, errorMessage } from '../../lib/errors.js';
import { RUNTIME_NAMES, type JobSpec, type RuntimeName } from '../../jobs/spec.js';
import type { Logger } from '../../observability/logger.js';
import { RuntimeHealthBook, type HealthOverride } from '../../policy/health.js';
import { loadPolicy } from '../../policy/load-policy.js';
import { decide } from '../../runner/decide.js';
import { route, trustFromSpec, webhookClaims } from '../../policy/route.js';
import { OPERATOR_CEILING, type TrustClaims, type TrustInputs } from '../../policy/trust.js';
import { githubPullRequestTrust, gitlabMergeRequestTrust } from '../../policy/webhooks.js';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import type { Decision } from '../../jobs/decision.js';
import { addJobFlags, jobSpecFromFlags, type JobFlags } from '../job-flags.js';
import { localClaims } from '../../runner/local.js';
import { ceilingOf, TENANT_NAME, tenantForRepository, tenantSettings } from '../../tenants/tenant-config.js';

interface ExplainFlags extends JobFlags {
  tenant?: string;
  githubEvent?: string;
  gitlabEvent?: string;
  payload?: string;
  health: string[];
  jobId?: string;
  local?: boolean;
  json?: boolean;
}

export function parseHealthOverride(text: string): HealthOverride {
  const m = /^([a-z]+)\.(failure_rate|available)=([0-9.]+)$/.exec(text.trim());
  const runtime = m?.[1] as RuntimeName | undefined;
  const value = Number(m?.[3]);
  if (
    !m ||
    !runtime ||
    !RUNTIME_NAMES.includes(runtime) ||
    !Number.isFinite(value) ||
    value < 0 ||
    value > 1
  ) {
    throw new UserError(
      `--health ${text}: expected RUNTIME.failure_rate=X or RUNTIME.available=X with X from 0 to 1, e.g. firecracker.failure_rate=0.02`,
    );
  }
  return { runtime, metric: m[2] as HealthOverride['metric'], value };
}

async function payloadTrust(flags: ExplainFlags): Promise<TrustInputs | undefined> {
  if (!flags.githubEvent && !flags.gitlabEvent) {
    if (flags.payload)
      throw new UserError('--payload needs --github-event pull_request or --gitlab-event merge_request');
    return undefined;
  }
  if (!flags.payload) throw new UserError('--github-event/--gitlab-event need --payload FILE.json');
  let payload: unknown;
  try {
    payload = JSON.parse(await readFile(flags.payload, 'utf8'));
  } catch (err) {
    throw new UserError(`--payload ${flags.payload}: ${errnoCode(err) ?? errorMessage(err)}`);
  }
  return flags.githubEvent ? githubPullRequestTrust(payload) : gitlabMergeRequestTrust(payload);
}

/**
 * The claims a job would be judged by: a tenant's (`--tenant`, or the tenant a GitHub payload's
 * repository maps to) as the API and webhooks judge them, else the operator's own.
 */
function explainClaims(
  config: Config,
  spec: JobSpec,
  flags: ExplainFlags,
  payload: TrustInputs | undefined,
): TrustClaims {
  const mapped =
    flags.githubEvent && payload?.repository
      ? tenantForRepository(config.webhooks.github, payload.repository)
      : undefined;
  const tenantName = flags.tenant ?? mapped;
  if (tenantName !== undefined && !TENANT_NAME.test(tenantName))
    throw new UserError(`--tenant ${tenantName}: use 1-63 lower-case letters, digits or "-", e.g. team-a`);
  const ceiling = tenantName ? ceilingOf(tenantSettings(config.tenants, tenantName)) : OPERATOR_CEILING;
  if (payload) return webhookClaims(spec, payload, ceiling);
  return tenantName ? { ceiling, claim: trustFromSpec(spec) } : localClaims(spec);
}

export function registerPolicy(program: Command, logger: Logger): void {
  const policy = program.command('policy');
  const explain = policy
    .command('explain')
    .description('print the routing decision for a job, with its reasons, without running anything')
    .argument('[command...]', 'the job’s command (optional here)')
    .addOption(
      new Option('--github-event <event>', 'classify a GitHub webhook payload').choices(['pull_request']),
    )
    .addOption(
      new Option('--gitlab-event <event>', 'classify a GitLab webhook payload').choices(['merge_request']),
    )
    .option('--payload <file.json>', 'the webhook payload')
    .option(
      '--health <runtime.metric=value>',
      'assume a runtime’s health, e.g. firecracker.failure_rate=0.02',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option(
      '--tenant <name>',
      'judge the job as this tenant’s, through the API (its trust ceiling; no default trust for what the job leaves out)',
    )
    .option('--job-id <id>', 'the job id the canary split hashes (default: a new one)')
    .option(
      '--local',
      'judge runtimes by this node’s fingerprints and recorded job starts (default: assume every runtime usable and healthy, as for the fleet)',
    )
    .option('--json', 'print {trust, runtime, fallback, reasons}');
  addJobFlags(explain).action(async (command: string[], flags: ExplainFlags) => {
    const globals = program.opts<BoxcarOptions>();
    const overrides = flags.health.map(parseHealthOverride);
    const fromPayload = await payloadTrust(flags);
    const { spec } = await jobSpecFromFlags(flags, command.length || flags.file ? command : ['true']);
    const config = await loadConfig(globals);
    const trust = explainClaims(config, spec, flags, fromPayload);
    const jobId = flags.jobId ?? randomUUID();
    let decision: Decision;
    if (flags.local) {
      const box = await openBoxcar(globals, logger);
      try {
        decision = await decide(box, jobId, spec, { trust, overrides });
      } finally {
        await box.close();
      }
    } else {
      const rules = await loadPolicy(config.policyFile);
      const book = new RuntimeHealthBook(rules, (runtime) =>
        assumedFingerprint(runtime, { allowTcgForUntrusted: config.microvm.allow_tcg_for_untrusted }),
      );
      decision = route(rules, { jobId, spec, trust }, await book.views(Date.now(), overrides));
    }
    if (flags.json) {
      process.stdout.write(
        `${JSON.stringify({ trust: decision.trust, runtime: decision.runtime, fallback: decision.fallback, reasons: decision.reasons })}\n`,
      );
      return;
    }
    process.stdout.write(
      `${decision.trust} → ${decision.runtime}${decision.fallback ? ` (fallback ${decision.fallback})` : ''}\n`,
    );
    for (const r of decision.reasons) process.stdout.write(`  - ${r}\n`);
  });
}
