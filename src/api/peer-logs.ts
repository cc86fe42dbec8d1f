import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { FastifyInstance } from 'fastify';
import type { Boxcar } from '../boxcar.js';
import { errorMessage } from '../lib/errors.js';
import { ownedHere } from '../lib/owner.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { JobRecord } from '../store/store.js';
import { readLogs, streamLogs } from './logs.js';

/**
 * Job logs across nodes: a job's log stays on the disk of the node that ran it, and any node of
 * the store serves it by asking that node, over the same authenticated node-to-node HTTP that
 * image pieces travel (each node's credential from the store's peer directory). A log whose
 * node is gone is gone with it.
 */

/** Where to ask for a job's log, when it is another live node's; undefined when it is this node's. */
export async function remoteLog(box: Boxcar, job: JobRecord): Promise<{ url: string } | undefined> {
  if (!box.peers || !job.owner || ownedHere(job.owner, box.paths.root)) return undefined;
  const peer = await box.store.livePeer(job.owner, Date.now());
  return peer?.url ? { url: `${peer.url}/peer/v1/jobs/${job.id}/logs` } : undefined;
}

/** Relays the other node's answer (the log, or its live stream) to the client, as it comes. */
export async function relayLog(
  box: Boxcar,
  remote: { url: string },
  follow: boolean,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const gone = new AbortController();
  req.on('close', () => gone.abort());
  const peers = box.peers;
  if (!peers) throw new Error('internal: a remote log without peers');
  let answer: Response;
  try {
    answer = await fetch(`${remote.url}${follow ? '?follow=true' : ''}`, {
      headers: peers.node.headers(),
      signal: gone.signal,
    });
  } catch (err) {
    res.writeHead(502, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: `the node that ran the job did not answer: ${errorMessage(err)}` }));
    return;
  }
  res.writeHead(answer.status, {
    'content-type': answer.headers.get('content-type') ?? 'text/plain; charset=utf-8',
    'cache-control': 'no-cache',
  });
  res.flushHeaders();
  if (!answer.body) return void res.end();
  try {
    await pipeline(Readable.fromWeb(answer.body as import('node:stream/web').ReadableStream), res);
  } catch (err) {
    if (!gone.signal.aborted) throw err; // the client went away: nothing more to relay
  }
}

/**
 * `GET /peer/v1/jobs/ID/logs[?follow=true]`: a job's log this node holds, for another node of
 * the store (only a node's credential is accepted: tenants' tokens are no use here).
 */
export function registerPeerLogs(app: FastifyInstance, box: Boxcar, scheduler: Scheduler): void {
  const peers = box.peers;
  if (!peers) return;
  app.get<{ Params: { id: string }; Querystring: { follow?: string } }>(
    '/peer/v1/jobs/:id/logs',
    async (req, reply) => {
      if (!(await peers.node.authenticate(req.headers)))
        return reply.code(401).send({ error: 'peer requests need a node’s credential' });
      const job = await box.store.getJob(req.params.id);
      if (!job || !ownedHere(job.owner, box.paths.root))
        return reply.code(404).send({ error: `this node holds no log of job ${req.params.id}` });
      if (req.query.follow !== 'true')
        return reply.type('text/plain; charset=utf-8').send(await readLogs(box, job));
      reply.hijack();
      await streamLogs(box, scheduler, job, req.raw, reply.raw);
    },
  );
}
