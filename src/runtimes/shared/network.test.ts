import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { jobTrustFields } from '../../isolation/verify.js';
import { leftovers, testBoxcar } from '../../testing/harness.js';
import {
  answerScript,
  createTestHost,
  datagramScript,
  sendDatagramsFrom,
  sinkScript,
  waitForOutput,
  type TestHost,
} from '../../isolation/test-hosts.js';
import { JobSpec } from '../../jobs/spec.js';
import { run, sleep } from '../../lib/exec.js';
import { silentLogger } from '../../observability/logger.js';
import { ensureFirewall, FIREWALL_TABLE, readTableHash } from './firewall.js';
import { leaseFor, setupNetwork, tbfArgs, teardownNetwork } from './network.js';

type Box = Awaited<ReturnType<typeof testBoxcar>>;

const DEFAULT_NETWORK = JobSpec.parse({ command: ['true'], network: true }).network;

/**
 * What a job can reach: the public test host, an internal one, the metadata address (a test
 * host of this file's own) and a host service through the job's gateway (the host's veth).
 */
const REACH_SCRIPT = [
  'gw=$(ip route | awk "/default/ {print \\$3}"); [ -n "$gw" ] || gw=$(ip addr | grep -o "10\\.213\\.[0-9.]*" | head -1 | awk -F. "{print \\$1\\".\\"\\$2\\".\\"\\$3\\".\\"\\$4-1}")',
  `echo public=$(nc -w 3 198.51.100.2 8080 </dev/null)`,
  `echo internal=$(nc -w 3 10.254.254.2 8080 </dev/null)`,
  `echo metadata=$(nc -w 3 169.254.169.254 80 </dev/null)`,
  `echo hostveth=$(nc -w 3 $gw 18081 </dev/null) gw=$gw`,
].join('\n');

function assertOnlyPublic(output: string): void {
  assert.match(output, /^public=public-ok$/m, output);
  assert.match(output, /^internal=$/m);
  assert.match(output, /^metadata=$/m);
  assert.match(output, /^hostveth= gw=10\.213\./m);
}

test('the seed’s token bucket becomes tc tbf arguments (bytes per refill_time ms)', () => {
  assert.deepEqual(tbfArgs({ sizeBytes: 100_000_000, refillMs: 1000 }), [
    'rate',
    '800000000bit',
    'burst',
    '100000000',
    'latency',
    '100ms',
  ]);
  assert.deepEqual(tbfArgs({ sizeBytes: 512 * 1024, refillMs: 2000 }).slice(0, 2), ['rate', '2097152bit']);
  assert.equal(
    tbfArgs({ sizeBytes: 100, refillMs: 1000 })[3],
    '1600',
    'a bucket smaller than a frame would pass nothing',
  );
});

// On every network job's start path: it must stay one `nft list`, far below a reinstall (≈ 35 ms).
test('the firewall check before each network job costs a few ms (one nft call, no reinstall)', async (t) => {
  const log = silentLogger();
  await ensureFirewall(log);
  const ms: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t0 = performance.now();
    await ensureFirewall(log);
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  const [median, p90] = [ms[25] ?? NaN, ms[45] ?? NaN];
  t.diagnostic(`per-job firewall check: median ${median.toFixed(1)} ms, p90 ${p90.toFixed(1)} ms (50 runs)`);
  assert.ok(median < 20, `median ${median.toFixed(1)} ms`);
});

for (const runtime of ['runc', 'gvisor'] as const) {
  describe(`${runtime} job networking`, () => {
    let box: Box;
    let pub: TestHost;
    let internal: TestHost;
    let metadata: TestHost;
    let hostServer: net.Server;
    let hostConnections = 0;
    const trust = () => jobTrustFields(box.runtimes.get(runtime).capabilities);
    const job = (input: Record<string, unknown>) =>
      box.runJob({
        runtime,
        network: true,
        ...trust(),
        ...input,
      });

    before(async () => {
      box = await testBoxcar();
      pub = await createTestHost(`p${runtime[0]}`, '198.51.100.1', '198.51.100.2', 24);
      internal = await createTestHost(`i${runtime[0]}`, '10.254.254.1', '10.254.254.2', 30);
      await waitForOutput(pub.serve(8080, answerScript('public-ok')), /listening/);
      // The cloud metadata address, served here by a test host: nothing real is hidden by it.
      metadata = await createTestHost(`m${runtime[0]}`, '169.254.169.253', '169.254.169.254', 30);
      await waitForOutput(internal.serve(8080, answerScript('internal-ok')), /listening/);
      await waitForOutput(metadata.serve(80, answerScript('metadata-ok')), /listening/);
      // A host service on every address, as careless daemons listen: the job must not reach it.
      hostServer = net.createServer((s) => {
        hostConnections++;
        s.end('host-ok\n');
      });
      await new Promise<void>((r) => hostServer.listen(18_081, '0.0.0.0', r));
    });
    after(async () => {
      hostServer.close();
      await pub.remove();
      await internal.remove();
      await metadata.remove();
      const left = await leftovers(box.paths);
      await box.cleanup();
      assert.deepEqual(left, []);
    });

    test('no network unless asked: only loopback', async () => {
      const { output } = await box.runJob({
        runtime,
        ...trust(),
        command: ['sh', '-c', 'ls /sys/class/net 2>/dev/null || ip link'],
      });
      assert.doesNotMatch(output, /bxc\d+/);
    });

    test('public destinations are reachable; the host, internal ranges, metadata and inbound connections are not', async () => {
      const { record, output } = await job({ command: ['sh', '-c', REACH_SCRIPT] });
      assert.equal(record.state, 'succeeded', output);
      assertOnlyPublic(output);
      assert.equal(hostConnections, 0, 'the host service saw no connection');
    });

    // Not `nft flush ruleset`: that would also drop every other table on the machine (a host
    // firewall, Docker's, other tools'), which a test must leave alone. Deleting Boxcar's own
    // table is the same "rules missing" for jobs.
    test('with Boxcar’s table deleted, the rules are back before the next network job starts', async () => {
      await job({ command: ['true'] }); // this process has installed its table
      const installed = await readTableHash();
      await run('nft', ['delete', 'table', ...FIREWALL_TABLE]);
      const { record, output } = await job({ command: ['sh', '-c', REACH_SCRIPT] });
      assert.equal(record.state, 'succeeded', output);
      assertOnlyPublic(output);
      assert.equal(hostConnections, 0, 'the host service saw no connection');
      assert.equal(await readTableHash(), installed);
    });

    test('a changed table (a rule let in) is replaced before the next network job starts', async () => {
      const installed = await readTableHash();
      assert.ok(installed, 'the table is installed');
      await run('nft', [
        'insert',
        'rule',
        ...FIREWALL_TABLE,
        'forward',
        'ip',
        'daddr',
        '10.254.254.2',
        'accept',
      ]);
      const { record, output } = await job({ command: ['sh', '-c', REACH_SCRIPT] });
      assert.equal(record.state, 'succeeded', output);
      assertOnlyPublic(output);
      assert.equal(await readTableHash(), installed);
    });

    if (runtime === 'gvisor')
      test('the job’s sockets are gVisor’s own (netstack): the host kernel holds no address in its namespace', async () => {
        const running = job({
          command: ['sh', '-c', 'echo public=$(nc -w 3 198.51.100.2 8080 </dev/null); sleep 2'],
        });
        let slot: number | undefined;
        for (let i = 0; i < 100 && slot === undefined; i++) {
          const file = existsSync(box.paths.containers)
            ? readdirSync(box.paths.containers)
                .map((d) => path.join(box.paths.containers, d, 'network.json'))
                .find((f) => existsSync(f))
            : undefined;
          if (file) slot = (JSON.parse(readFileSync(file, 'utf8')) as { slot: number }).slot;
          else await sleep(50);
        }
        assert.notEqual(slot, undefined, 'the job has a network slot');
        const lease = leaseFor(slot as number);
        await sleep(1000); // started: runsc has taken the interface over
        const { stdout } = await run('ip', [
          '-n',
          lease.netns,
          '-4',
          '-o',
          'addr',
          'show',
          'dev',
          lease.jobIf,
        ]);
        const { output } = await running;
        assert.match(output, /^public=public-ok$/m);
        assert.equal(stdout.trim(), '', 'runsc removed the address from the host kernel’s interface');
      });

    test('egress is shaped by the token bucket: 2 MB at 512 KiB per second takes about 3 s', async () => {
      const sink = pub.serve(9090, sinkScript);
      await waitForOutput(sink, /listening/);
      const measured = waitForOutput(sink, /\d+ \d+/, 60_000);
      const { output } = await job({
        command: ['sh', '-c', 'head -c 2097152 /dev/zero | nc -w 20 198.51.100.2 9090; echo sent'],
        network: { egress_rate_limiter: { bandwidth: { size: 524_288, refill_time: 1000 } } },
      });
      assert.match(output, /sent/);
      const [bytes, ms] = (await measured).split(' ').map(Number);
      assert.equal(bytes, 2_097_152);
      // A full bucket (512 KiB) passes at once, the other 1.5 MiB at 512 KiB/s. gVisor's own
      // TCP stack recovers from tbf's drops more slowly than Linux's: seen up to 14 s.
      const most = runtime === 'gvisor' ? 20_000 : 6000;
      assert.ok((ms ?? 0) >= 2000 && (ms ?? 0) <= most, `took ${ms} ms`);
    });

    test('every network namespace and veth is gone after the jobs', async () => {
      const { stdout } = await run('ip', ['-o', 'link']);
      assert.doesNotMatch(stdout, /bxh\d+/);
      assert.equal(
        existsSync('/var/run/netns') && readdirSync('/var/run/netns').some((n) => n.startsWith('bxn-')),
        false,
      );
    });
  });
}

describe('anti-spoofing', () => {
  let pub: TestHost;
  const datagrams: string[] = [];

  before(async () => {
    pub = await createTestHost('ps', '198.51.100.1', '198.51.100.2', 24);
    const server = pub.serve(9053, datagramScript);
    server.stdout?.on('data', (d: Buffer) => datagrams.push(...d.toString().trim().split('\n')));
    await waitForOutput(server, /listening/);
  });
  after(async () => {
    await pub.remove();
  });

  // As a job could with CAP_NET_ADMIN, or any microVM guest (root in its own kernel): addresses
  // added inside its namespace, each used as the source of one datagram to the public host:
  // another job's (impersonation), its own /30's network address (passes a reverse-path check,
  // not the .2 rule) and one from outside (not NATed, the classic reflection source). Not the
  // /30's broadcast: the kernel itself sends from the interface's address when bound to it.
  test('a job’s packets leave with its own address only; forged sources get nothing through', async () => {
    const lease = await setupNetwork(`spoof-${process.pid}`, DEFAULT_NETWORK, async () => {}, silentLogger());
    try {
      const base = lease.jobIp.split('.').slice(0, 3).join('.');
      const last = Number(lease.jobIp.split('.')[3]);
      const forged = {
        other_job: leaseFor((lease.slot + 1) % 16_384).jobIp,
        own_subnet_network: `${base}.${last - 2}`,
        outside: '203.0.113.7',
      };
      for (const addr of Object.values(forged))
        await run('ip', ['-n', lease.netns, 'addr', 'add', `${addr}/32`, 'dev', lease.jobIf]);
      const sends = Object.entries({ own: lease.jobIp, ...forged }).map(
        ([label, addr]) => `${label}=${addr}`,
      );
      await sendDatagramsFrom(lease.netns, '198.51.100.2', 9053, sends);
      for (let i = 0; i < 30 && !datagrams.some((d) => d.startsWith('own ')); i++) await sleep(100);
      await sleep(500); // forged ones, had they passed, would have come with it
      assert.deepEqual(
        datagrams.filter((d) => d !== 'listening'),
        ['own from 198.51.100.1'],
        'only the job’s own address got through (NATed)',
      );
    } finally {
      await teardownNetwork(lease);
    }
  });
});

/**
 * A fresh network namespace stands for a host that never routed (forwarding off everywhere,
 * `ip_forward` included), with the public test host as its uplink (default route): Boxcar turns
 * forwarding on where jobs' packets come in (the job's veth) and where their replies do (the
 * uplink; IPv4 decides by incoming interface), and nowhere else.
 */
describe('IPv4 forwarding', () => {
  const scratch = `bxt-fw${process.pid}`;
  after(async () => {
    await run('ip', ['netns', 'del', scratch]).catch((err: Error) => {
      if (!/No such file/.test(err.message)) throw err;
    });
  });

  test('is on for the job’s veth and the uplink only, never host-wide, and jobs reach the public host', async () => {
    const here = (p: string) => new URL(p, import.meta.url).href;
    const script = `
      import { readFileSync, writeFileSync } from 'node:fs';
      const { setupNetwork, teardownNetwork } = await import(${JSON.stringify(here('./network.js'))});
      const { uplinks } = await import(${JSON.stringify(here('./firewall.js'))});
      const { createTestHost, answerScript, waitForOutput } = await import(${JSON.stringify(here('../../isolation/test-hosts.js'))});
      const { silentLogger } = await import(${JSON.stringify(here('../../observability/logger.js'))});
      const { run } = await import(${JSON.stringify(here('../../lib/exec.js'))});
      const conf = (dev) => readFileSync('/proc/sys/net/ipv4/conf/' + dev + '/forwarding', 'utf8').trim();
      writeFileSync('/proc/sys/net/ipv4/conf/all/forwarding', '0');
      writeFileSync('/proc/sys/net/ipv4/conf/default/forwarding', '0');
      await run('ip', ['link', 'set', 'lo', 'up']);
      await run('ip', ['link', 'add', 'other0', 'type', 'veth', 'peer', 'name', 'other1']); // no dummy driver here
      const pub = await createTestHost('fwp${process.pid % 10000}', '198.51.100.1', '198.51.100.2', 24, { forward: false });
      let lease;
      try {
        await run('ip', ['route', 'add', 'default', 'via', '198.51.100.2']);
        await waitForOutput(pub.serve(8080, answerScript('public-ok')), /listening/);
        lease = await setupNetwork('fw-${process.pid}', ${JSON.stringify(DEFAULT_NETWORK)}, async () => {}, silentLogger());
        const reach = "require('net').connect(8080, '198.51.100.2').on('data', (d) => process.stdout.write(d)).on('error', () => {}).setTimeout(3000, function () { this.destroy(); })";
        const { stdout } = await run('ip', ['netns', 'exec', lease.netns, process.execPath, '-e', reach]);
        const up = await uplinks();
        console.log(JSON.stringify({
          reached: stdout.trim(),
          ip_forward: readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(),
          all: conf('all'), other0: conf('other0'), lo: conf('lo'),
          uplinks: Object.fromEntries(up.map((u) => [u, conf(u)])),
          jobVeth: conf(lease.hostIf),
        }));
      } finally {
        if (lease) await teardownNetwork(lease);
        await pub.remove();
      }
    `;
    await run('ip', ['netns', 'add', scratch]);
    const { stdout } = await run('ip', [
      'netns', 'exec', scratch, process.execPath, '--input-type=module', '-e', script,
    ]); // prettier-ignore
    const r = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
    assert.equal(r.reached, 'public-ok', stdout);
    assert.equal(r.jobVeth, '1');
    assert.deepEqual(Object.values(r.uplinks as object), ['1']);
    assert.deepEqual([r.ip_forward, r.all, r.other0, r.lo], ['0', '0', '0', '0'], 'nowhere else');
  });
});
