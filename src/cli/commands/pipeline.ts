import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { openBoxcar, type Boxcar, type BoxcarOptions } from '../../boxcar.js';
import { loadYamlFile, parseYaml } from '../../lib/yaml.js';
import { errorMessage, UserError } from '../../lib/errors.js';
import { run } from '../../lib/exec.js';
import { Source } from '../../jobs/spec.js';
import { JOB_FILE, planOf, PipelineSpec, type PipelinePlan } from '../../pipelines/plan.js';
import { pinSpec } from '../../images/resolve.js';
import { formatBytes } from '../../lib/quantity.js';
import { reconcileOrphans } from '../../runner/reconcile.js';
import { jobResultJson } from '../../runner/result.js';
import type { Logger } from '../../observability/logger.js';
import { startTracing } from '../../observability/tracing-setup.js';
import type { JobRecord, PipelineRecord } from '../../store/store.js';
import { runLocalJob } from '../../runner/local.js';
import { advancePipeline } from '../../scheduler/pipelines.js';
import { pipelineJobs, pipelineView } from '../../api/job-view.js';
import { cancelOnSignals } from '../signals.js';
import { dollars, formatTable, ms } from '../table.js';
import { dagTree } from '../dag-tree.js';

interface PipelineOptions {
  json?: boolean;
  repo?: string;
  commit?: string;
  source?: string;
}

/** The repository to check out and its commit: a local path's HEAD unless a commit is given. */
async function checkoutOf(opts: PipelineOptions): Promise<{ url: string; commit: string } | undefined> {
  if (!opts.repo) {
    if (opts.commit) throw new UserError('--commit needs --repo: say which repository it is a commit of');
    return undefined;
  }
  const local = !/^[a-z][a-z0-9+.-]*:\/\//i.test(opts.repo) && !/^[^/]+@[^/]+:/.test(opts.repo);
  const url = local ? path.resolve(opts.repo) : opts.repo;
  if (local && !existsSync(url)) throw new UserError(`--repo ${opts.repo}: no such directory`);
  if (opts.commit) return { url, commit: opts.commit };
  if (!local) throw new UserError(`--repo ${opts.repo}: give --commit, the full commit id to run`);
  try {
    const { stdout } = await run('git', ['-C', url, 'rev-parse', '--verify', 'HEAD^{commit}']);
    return { url, commit: stdout.trim() };
  } catch (err) {
    throw new UserError(`--repo ${opts.repo}: not a git repository with a commit (${errorMessage(err)})`);
  }
}

export function registerPipeline(program: Command, logger: Logger): void {
  program
    .command('pipeline')
    .argument('[file]', `pipeline YAML file (default: ${JOB_FILE} of --repo at its commit)`)
    .option('--repo <path|url>', 'the repository every job checks out (a local path: its HEAD)')
    .option('--commit <sha>', 'the commit to check out (default: HEAD of a local --repo)')
    .option(
      '--source <source>',
      'where the code comes from, for every job: internal_repo or external_pr (a fork: untrusted)',
    )
    .option('--json', 'print one JSON object with the pipeline and every job result')
    .action(async (file: string | undefined, opts: PipelineOptions) => {
      const source = opts.source === undefined ? undefined : Source.safeParse(opts.source);
      if (source && !source.success)
        throw new UserError(`--source: "${opts.source}" is not a source; use internal_repo or external_pr`);
      const checkout = await checkoutOf(opts);
      if (!file && !checkout) throw new UserError(`give a pipeline file, or --repo to run its ${JOB_FILE}`);
      if (process.getuid?.() !== 0)
        throw new UserError('boxcar pipeline needs root (it creates containers); run it as root');
      const box = await openBoxcar(program.opts<BoxcarOptions>(), logger);
      const tracing = await startTracing(box.config.observability.otlp_endpoint, logger, {
        pipelineOf: (id) => box.store.getPipeline(id),
      });
      const cancel = cancelOnSignals();
      try {
        await reconcileOrphans(box);
        const parsed = file
          ? await loadYamlFile(file, PipelineSpec)
          : parseYaml(
              await box.mirrors.show(checkout?.url as string, checkout?.commit as string, JOB_FILE, [
                'file',
                'https',
                'ssh',
              ]),
              `${checkout?.url}@${checkout?.commit.slice(0, 12)}:${JOB_FILE}`,
              PipelineSpec,
            );
        const plan = planOf({
          ...parsed,
          checkout: parsed.checkout ?? (checkout && { ...checkout, submodules: false }),
        });
        for (const j of plan.jobs) if (source?.success) j.spec.source = source.data;
        // Every image is pinned before the first job runs: a pipeline whose image cannot be
        // found fails now, naming its job, not halfway through with jobs already run.
        for (const j of plan.jobs)
          j.spec = await pinSpec(j.spec, box.puller).catch((err: unknown) => {
            throw err instanceof UserError ? new UserError(`job ${j.name}: ${err.message}`) : err;
          });
        const outputs = new Map<string, string>();
        const p = await runPipeline(
          box,
          plan,
          checkout,
          cancel.signal,
          (s) => (opts.json ? process.stderr : process.stdout).write(s),
          outputs,
        );
        const jobs = await pipelineJobs(p, (id) => box.store.getJob(id));
        if (opts.json) process.stdout.write(`${JSON.stringify(pipelineJson(p, jobs, outputs))}\n`);
        else process.stdout.write(summary(p, jobs));
        process.exitCode = p.state === 'succeeded' ? 0 : 1;
      } finally {
        cancel.dispose();
        await tracing?.shutdown(); // the spans of the pipeline and its jobs, sent before exiting
        await box.close();
      }
    });
}

/**
 * Runs the pipeline's DAG on this node in the foreground: each job as soon as the jobs it
 * needs have ended, side by side, its output prefixed with its name.
 */
async function runPipeline(
  box: Boxcar,
  plan: PipelinePlan,
  checkout: { url: string; commit: string } | undefined,
  signal: AbortSignal,
  say: (s: string) => void,
  /** Each job's output (as `boxcar run --json` keeps it), by job id. */
  outputs: Map<string, string>,
): Promise<PipelineRecord> {
  const created = await box.store.createPipeline({
    id: randomUUID(),
    tenant: 'local',
    name: plan.name,
    plan,
    origin: {
      via: 'cli',
      actor: 'operator',
      ...(checkout ? { repository: checkout.url, commit: checkout.commit } : {}),
    },
    createdAt: Date.now(),
  });
  say(`pipeline ${plan.name} (${created.id}): ${plan.jobs.length} jobs in ${plan.stages.join(' → ')}\n`);
  const width = Math.max(...plan.jobs.map((j) => j.name.length));
  const running = new Set<Promise<void>>();
  let wake: () => void = () => undefined;
  const failedToQueue = new Map<string, string>();
  // Started here, recorded once its job is decided: not started twice while that happens.
  const started = new Set<string>();
  const queue = async (p: PipelineRecord, jobId: string, spec: JobRecord['spec']) => {
    if (started.has(jobId)) return;
    started.add(jobId);
    const prefix = `${spec.name.padEnd(width)} │ `;
    say(`${prefix}▶ started\n`);
    const done = runLocalJob(
      box,
      spec,
      { signal, onOutput: (c) => say(c.text.replace(/^(?=.)/gm, prefix)) },
      { id: jobId, pipeline: p.id },
    )
      .then(({ record: r, output }) => {
        outputs.set(r.id, output);
        say(
          `${prefix}■ ${r.state}${r.exitCode !== null ? ` (exit ${r.exitCode})` : ''}${r.error ? `: ${r.error}` : ''}\n`,
        );
      })
      .catch((err: unknown) => {
        if (!(err instanceof UserError)) throw err;
        failedToQueue.set(spec.name, err.message);
        say(`${prefix}■ not run: ${err.message}\n`);
      })
      .finally(() => {
        running.delete(done);
        wake();
      });
    running.add(done);
  };
  let cancelled = false;
  for (;;) {
    if (signal.aborted && !cancelled) {
      cancelled = true;
      const p = (await box.store.getPipeline(created.id)) as PipelineRecord;
      await box.store.updatePipeline(p.id, p.version, { cancelRequested: true });
    }
    if (failedToQueue.size) {
      const p = (await box.store.getPipeline(created.id)) as PipelineRecord;
      const jobs = structuredClone(p.jobs);
      for (const [name, why] of failedToQueue)
        jobs[name] = { attempts: jobs[name]?.attempts ?? [], error: why };
      if (await box.store.updatePipeline(p.id, p.version, { jobs })) failedToQueue.clear();
    }
    const p = (await advancePipeline(box.store, created.id, queue)) as PipelineRecord;
    if (p.state !== 'running' && running.size === 0) return p;
    const woken = new Promise<void>((r) => (wake = r));
    await Promise.race([woken, new Promise((r) => setTimeout(r, 1000))]);
  }
}

function pipelineJson(
  p: PipelineRecord,
  jobs: ReadonlyMap<string, JobRecord>,
  outputs: ReadonlyMap<string, string>,
) {
  const view = pipelineView(p, jobs);
  return {
    ...view,
    pipeline: p.name,
    passed: p.state === 'succeeded',
    jobs: view.jobs.map((j) => {
      const r = j.job ? jobs.get(j.job) : undefined;
      return { ...j, ...(r ? jobResultJson(r, outputs.get(r.id) ?? '') : { state: j.status }) };
    }),
  };
}

function summary(p: PipelineRecord, jobs: ReadonlyMap<string, JobRecord>): string {
  const view = pipelineView(p, jobs);
  const rows = view.jobs.map((v) => {
    const j = v.job ? jobs.get(v.job) : undefined;
    const result =
      v.status === 'succeeded'
        ? 'ok'
        : v.allowFailure && j
          ? `${v.status} (allowed)`
          : v.status.toUpperCase();
    return [
      v.name,
      v.stage,
      j?.runtime ?? '-',
      result,
      j?.exitCode === null || !j ? '-' : String(j.exitCode),
      ms(j?.startupMs ?? null),
      ms(j?.durationMs ?? null),
      j?.peakMemoryBytes == null ? '-' : formatBytes(j.peakMemoryBytes),
      dollars(j?.costDollars ?? null),
    ];
  });
  const failed = view.jobs.filter((j) => !['succeeded', 'skipped'].includes(j.status) && !j.allowFailure);
  return [
    '',
    formatTable(
      ['JOB', 'STAGE', 'RUNTIME', 'RESULT', 'EXIT', 'STARTUP', 'DURATION', 'PEAK MEM', 'COST'],
      rows,
    ),
    '',
    dagTree(view),
    '',
    `pipeline ${p.name}: ${p.state === 'succeeded' ? 'passed' : p.state.toUpperCase()} (${view.jobs.length} jobs, ${failed.length} failed${view.jobs.some((j) => j.allowFailure && j.status !== 'succeeded') ? ', allowed failures not counted' : ''})`,
    '',
  ].join('\n');
}
