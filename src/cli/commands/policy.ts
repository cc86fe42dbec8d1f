import { readFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { Option, type Command } from 'commander';
import { loadConfig } from '../../config/config.js';
import { UserError } from '../../errors.js';
import { RUNTIME_NAMES, type RuntimeName } from '../../jobs/spec.js';
import type { Logger } from '../../observability/logger.js';
import { RuntimeHealthBook, type HealthOverride } from '../../policy/health.js';
import { loadPolicy } from '../../policy/load-policy.js';
import { route, trustFromSpec } from '../../policy/route.js';
import type { TrustInputs } from '../../policy/trust.js';
import { githubPullRequestTrust, gitlabMergeRequestTrust } from '../../policy/webhooks.js';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import type { Decision } from '../../policy/decision.js';
import { addJobFlags, jobSpecFromFlags, type JobFlags } from '../job-flags.js';
import { decideLocally, localTrust } from '../local-job.js';

interface ExplainFlags extends JobFlags {
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
    throw new UserError(
      `--payload ${flags.payload}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  return flags.githubEvent ? githubPullRequestTrust(payload) : gitlabMergeRequestTrust(payload);
}

export function registerPolicy(program: Command, logger: Logger): void {
  const policy = program.command('policy').description('the routing policy');
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
    const trust = fromPayload ? { ...trustFromSpec(spec), ...fromPayload } : localTrust(spec);
    const jobId = flags.jobId ?? randomUUID();
    let decision: Decision;
    if (flags.local) {
      const box = await openBoxcar(globals, logger);
      try {
        decision = await decideLocally(box, jobId, spec, { trust, overrides });
      } finally {
        await box.close();
      }
    } else {
      const rules = await loadPolicy((await loadConfig(globals)).policyFile);
      const book = new RuntimeHealthBook(rules, () =>
        Promise.reject(new Error('fingerprints are not read without --local')),
      );
      decision = route(rules, { jobId, spec, trust }, await book.views(Date.now(), overrides, true));
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
