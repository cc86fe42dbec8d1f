/**
 * Several nodes losing one of theirs, again and again: N runc jobs over 3 `boxcar serve`
 * processes sharing one PostgreSQL, with one node killed every `every` seconds (with its
 * monitors and containers, as a lost machine) and started again on the same disk. Reports lost
 * jobs and results recorded twice (both must be 0), how many jobs were run again, and the
 * longest a job waited because its node died (from its node's death to its new start).
 * Run: node dist/bench/node-loss.js [jobs=1000] [every=20]   (root)
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { JobView } from '../src/api/job-view.js';
import { isTerminal } from '../src/jobs/states.js';
import { PostgresStore } from '../src/store/postgres/postgres-store.js';
import { tempState } from '../src/testing/harness.js';
import { startPostgres } from '../src/testing/postgres.js';
import { boxcarSync, exited, startServe } from '../src/testing/serve-process.js';
import { row } from './lib/stats.js';

const JOBS = Number(process.argv[2] ?? 1000);
const EVERY_S = Number(process.argv[3] ?? 20);

async function main() {
  const pg = await startPostgres();
  const states = [await tempState(), await tempState(), await tempState()];
  const nodes: Array<{ child: ChildProcess; url: string } | undefined> = [];
  try {
    // Outside every node's state directory: a lost node's processes are found by that path.
    const config = path.join(os.tmpdir(), `bx-node-loss-${process.pid}.yaml`);
    writeFileSync(
      config,
      'scheduler:\n  lease: 3s\n  max_attempts: 10\ntenants:\n  ci: { trust: trusted }\n',
    );
    const args = (i: number) => ['--state', states[i]?.root as string, '--store', pg.url, '--config', config];
    const token = boxcarSync([...args(0), 'token', 'create', '--tenant', 'ci']);
    for (let i = 0; i < 3; i++) nodes[i] = await startServe(args(i));
    const api = async <T>(url: string, p: string, init: RequestInit = {}): Promise<T> => {
      const res = await fetch(`${url}${p}`, {
        ...init,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      });
      if (!res.ok) throw new Error(`${p}: ${res.status} ${await res.text()}`);
      return (await res.json()) as T;
    };
    const t0 = Date.now();
    const ids: string[] = [];
    // Jobs arrive while nodes are lost: submitted through the live nodes, side by side with the losses.
    let victim = 0;
    const submitting = (async () => {
      for (let i = 0; i < JOBS; i++) {
        const body = JSON.stringify({
          source: 'internal_repo',
          user_group: 'internal_team',
          command: 'sleep 1',
          resources: { memory: '16Mi', requests: { cpus: '10m', memory: '8Mi' } },
        });
        for (let tries = 0; ; tries++) {
          const url = nodes[(i + tries) % 3]?.url as string;
          try {
            ids.push((await api<JobView>(url, '/v1/jobs', { method: 'POST', body })).id);
            break;
          } catch (err) {
            if (tries > 5) throw err; // that node is being restarted: the next one takes it
          }
        }
      }
    })();
    let submitted = false;
    void submitting.then(() => (submitted = true));
    const store = await PostgresStore.connect(pg.url);
    const deaths: Array<{ at: number; owner: string }> = [];
    const allDone = async () =>
      submitted &&
      (await store.listJobs({ tenant: 'ci', states: ['queued', 'starting', 'running'], limit: 1 })).length ===
        0;
    while (!(await allDone())) {
      await new Promise((r) => setTimeout(r, EVERY_S * 1000));
      if (await allDone()) break;
      // A node is lost with its monitors and containers, then comes back on the same disk.
      const n = nodes[victim] as { child: ChildProcess; url: string };
      const pid = n.child.pid;
      n.child.kill('SIGKILL');
      await exited(n.child);
      deaths.push({ at: Date.now(), owner: `:${pid}:` });
      const root = states[victim]?.root as string;
      spawnSync('pkill', ['-9', '-f', `${root}/`]);
      const runc = (...a: string[]) =>
        spawnSync('runc', ['--root', states[victim]?.runcRoot as string, ...a], { encoding: 'utf8' });
      for (const id of runc('list', '-q').stdout.split('\n').filter(Boolean)) runc('delete', '--force', id);
      nodes[victim] = await startServe(args(victim));
      victim = (victim + 1) % 3;
    }
    await submitting;
    const wallS = (Date.now() - t0) / 1000;
    let lost = 0;
    let twice = 0;
    let rerun = 0;
    let longestWaitMs = 0;
    for (const id of ids) {
      const job = await store.getJob(id);
      if (!job || !isTerminal(job.state) || job.state !== 'succeeded') lost++;
      const events = await store.events(id);
      if (events.filter((e) => e.to === 'succeeded').length > 1) twice++;
      const requeues = events.filter((e) => e.to === 'queued' && e.from !== null);
      if (requeues.length) rerun++;
      // From the death of the node that held it to its next start.
      for (const q of requeues) {
        const death = [...deaths].reverse().find((d) => d.at <= q.at);
        const restart = events.find((e) => e.to === 'running' && e.at > q.at);
        if (death && restart) longestWaitMs = Math.max(longestWaitMs, restart.at - death.at);
      }
    }
    await store.close();
    console.log(
      `node-loss: ${JOBS} jobs over 3 nodes, one node lost every ${EVERY_S} s (${deaths.length} losses)`,
    );
    console.log(row(['', 'value']));
    console.log(row(['jobs lost', lost]));
    console.log(row(['results recorded twice', twice]));
    console.log(row(['jobs run again after a loss', rerun]));
    console.log(row(['longest wait caused by a dead node (s)', longestWaitMs / 1000]));
    console.log(row(['wall time (s)', wallS]));
    console.log(row(['jobs per second', JOBS / wallS]));
  } finally {
    for (const n of nodes)
      if (n && n.child.exitCode === null && n.child.signalCode === null) {
        n.child.kill('SIGTERM');
        await exited(n.child);
      }
    for (const s of states) await s.cleanup();
    rmSync(path.join(os.tmpdir(), `bx-node-loss-${process.pid}.yaml`), { force: true });
    await pg.stop();
  }
}

await main();
