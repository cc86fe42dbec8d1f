// `make run`, part 4: a GitHub pull request webhook for the sample repository, through a real
// `boxcar serve` on loopback. GitHub's API cannot run here: a stand-in on loopback receives the
// commit statuses and checks each request against GitHub's published API description
// (@octokit/openapi), as the tests do. Usage: node scripts/demo-pull-request.mjs REPO
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dagTree } from '../dist/src/cli/dag-tree.js';
import { githubSpec } from '../dist/src/forge/testing/forge-apis.js';
import { startOpenApiServer } from '../dist/src/forge/testing/openapi-server.js';
import { pullRequestOpened, postPullRequest } from '../dist/src/testing/github-events.js';
import { boxcarSync, exited, startServe } from '../dist/src/testing/serve-process.js';

const repo = path.resolve(process.argv[2] ?? '');
const sha = execFileSync('git', ['-C', repo, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();
const secret = randomUUID();
const state = mkdtempSync(path.join(os.tmpdir(), 'boxcar-demo-serve-'));
const github = await startOpenApiServer({
  spec: githubSpec(),
  authorize: (s) => (s.headers.authorization === 'Bearer ghp_demo' ? undefined : 'bad token'),
});
const config = path.join(state, 'config.yaml');
writeFileSync(
  config,
  `tenants:
  demo: { trust: trusted }
workspaces: { checkout_protocols: [https, ssh, file] } # the sample repository is a local one
webhooks:
  public_url: https://boxcar.example.com
  github: { secret: ${secret}, tenant: demo, api_url: '${github.url}', token: ghp_demo }
`,
);
let serve;
try {
  serve = await startServe(['--state', state, '--config', config]);
  const token = boxcarSync(['--state', state, '--config', config, 'token', 'create', '--tenant', 'demo']);
  const api = async (url) =>
    (await fetch(`${serve.url}${url}`, { headers: { authorization: `Bearer ${token}` } })).json();

  // GitHub's own example of a pull_request "opened" event, pointed at the sample repository.
  const event = pullRequestOpened(sha, repo);
  const res = await postPullRequest(serve.url, secret, event);
  const { delivery } = await res.json();
  console.log(
    `POST /v1/webhooks/github (pull request #${event.number} at ${sha.slice(0, 12)}): ${res.status}`,
  );
  let d;
  do {
    await new Promise((r) => setTimeout(r, 200));
    d = await api(`/v1/deliveries/${delivery}`);
  } while (d.state === 'pending');
  if (d.state !== 'done') throw new Error(`the delivery failed: ${d.error}`);
  const { pipeline } = await api(`/v1/jobs/${d.jobs[0]}`);
  const view = await api(`/v1/pipelines/${pipeline}?wait=5m`);
  console.log(`GET /v1/pipelines/${pipeline}:`);
  console.log(dagTree(view));
  // Statuses are sent off the jobs' path: give the last ones a moment.
  await new Promise((r) => setTimeout(r, 1500));
  console.log(
    `\nthe GitHub stand-in received ${github.seen.length} commit statuses (${github.seen.filter((s) => s.problems.length).length} not matching GitHub's API description):`,
  );
  for (const s of github.seen) console.log(`  ${s.method} ${s.path}  ${s.body.context}: ${s.body.state}`);
} finally {
  if (serve) {
    serve.child.kill('SIGTERM');
    await exited(serve.child);
  }
  await github.close();
  rmSync(state, { recursive: true, force: true });
}
