import type { Command } from 'commander';
import { DeliveryWorker } from '../../api/github-webhook.js';
import { buildApi } from '../../api/server.js';
import { dashboard } from '../../dashboard/plugin.js';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { reportJobChanges } from '../../forge/job-changes.js';
import { forgeReporter } from '../../forge/reporter.js';
import { Prefetcher } from '../../images/prefetch.js';
import { UserError } from '../../lib/errors.js';
import { parseDurationMs } from '../../lib/quantity.js';
import type { Logger } from '../../observability/logger.js';
import { startTracing } from '../../observability/tracing-setup.js';
import { PipelineRunner } from '../../scheduler/pipelines.js';
import { registerNodeMetrics } from '../../scheduler/node-metrics.js';
import { Scheduler } from '../../scheduler/scheduler.js';

/** How long statuses of the last jobs may take to reach the forges at shutdown. */
const FORGE_GRACE_MS = 5000;

/** `host:port`, IPv6 as `[::1]:port`. */
function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65535)
    throw new UserError(`--listen ${value}: use HOST:PORT, e.g. 127.0.0.1:8080 (port 0 picks a free one)`);
  return { host: (m[1] ?? m[2]) as string, port };
}

export function registerServe(program: Command, logger: Logger): void {
  program
    .command('serve')
    .requiredOption('--listen <host:port>', 'address to listen on, e.g. 127.0.0.1:8080')
    .option(
      '--drain <duration>',
      'on SIGTERM, how long to wait for running jobs before leaving them running',
      '30s',
    )
    .action(async (opts: { listen: string; drain: string }) => {
      const listen = parseListen(opts.listen);
      const drain = parseDurationMs(opts.drain);
      if (!drain.ok) throw new UserError(`--drain: ${drain.message}`);
      const box = await openBoxcar({ ...program.opts<BoxcarOptions>(), serving: true }, logger);
      const tracing = await startTracing(box.config.observability.otlp_endpoint, logger, {
        publicUrl: box.config.webhooks.publicUrl,
        pipelineOf: (id) => box.store.getPipeline(id),
      });
      const scheduler = new Scheduler(box);
      await scheduler.start();
      registerNodeMetrics(box, scheduler);
      const pipelines = new PipelineRunner(box, scheduler);
      pipelines.start();
      const deliveries = new DeliveryWorker(box, scheduler, pipelines);
      deliveries.start();
      const app = buildApi(box, scheduler, deliveries, pipelines);
      // The dashboard at `/` (registered here, not by buildApi: it builds on the API, not the reverse).
      await app.register(dashboard, { box, scheduler });
      const address = await app.listen(listen);
      // Commit statuses for the jobs of forges' webhooks, when this node has credentials for one.
      const forge = forgeReporter(box.config.webhooks, box.store, logger, {
        publicUrl: box.config.webhooks.publicUrl ?? address,
      });
      const unwatch = forge && reportJobChanges(scheduler, box.store, forge, logger);
      const unwatchPipelines = forge && pipelines.onChange((p) => forge.pipelineChanged(p));
      if (box.peers) {
        await box.peers.node.serveAt(box.config.images.p2p.advertise ?? address);
        await box.peers.publish(await box.images.blobs());
      }
      const pf = box.config.images.prefetch;
      const prefetcher = pf.enabled
        ? new Prefetcher(box.store, box.images, box.puller, logger, {
            limit: pf.limit,
            bandwidth: pf.bandwidth,
            intervalMs: pf.interval,
            windowMs: pf.window,
          })
        : undefined;
      prefetcher?.start();
      process.stdout.write(`${address}\n`);
      logger.info({ address, node: scheduler.owner }, 'serving');

      await new Promise<void>((resolve) => {
        const stop = (signal: NodeJS.Signals) => {
          logger.info({ signal }, 'shutting down: no new jobs, draining running ones');
          resolve();
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
      await app.close();
      await prefetcher?.stop();
      await deliveries.stop();
      await pipelines.stop();
      const { drained, left } = await scheduler.stop(drain.value);
      unwatch?.();
      unwatchPipelines?.();
      await forge?.stop(FORGE_GRACE_MS);
      await tracing?.shutdown(); // the spans of the last jobs, sent
      if (left) {
        // Their sandboxes keep running, unwatched; the next start of this node re-attaches them.
        logger.info({ drained, left }, 'stopped; jobs left running are re-attached at the next start');
        process.exit(0);
      }
      logger.info({ drained }, 'stopped');
      await box.close();
    });
}
