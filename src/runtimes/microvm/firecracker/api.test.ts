import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ValidateFunction } from 'ajv';
import { parse } from 'yaml';
import { FirecrackerClient } from './api.js';
import { configureAndStart, FirecrackerVmm, loadSnapshot, saveSnapshot } from './vmm.js';
import type { VmLaunch } from '../vmm.js';

/**
 * Every request the Firecracker backend can send, checked against Firecracker's own OpenAPI
 * description (firecracker-api.yaml, from firecracker-microvm/firecracker): a server on a Unix
 * socket answers like Firecracker's API would, after checking the method and path are an
 * operation of the API and the body matches that operation's schema. Firecracker refuses
 * unknown fields, so the schemas are checked with `additionalProperties: false`.
 */
const SPEC = fileURLToPath(
  new URL('../../../../../src/runtimes/microvm/firecracker/firecracker-api.yaml', import.meta.url),
);

interface Operation {
  operationId: string;
  parameters?: Array<{ in: string; required?: boolean; schema?: { $ref: string } }>;
}
interface Seen {
  method: string;
  path: string;
  operationId?: string;
  body?: Record<string, unknown>;
  problems: string[];
}

/** Firecracker denies unknown fields: so does the check. */
function closed(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(closed);
  if (node && typeof node === 'object') {
    const o = Object.fromEntries(Object.entries(node).map(([k, v]) => [k, closed(v)]));
    if (o.properties && o.additionalProperties === undefined) o.additionalProperties = false;
    return o;
  }
  return node;
}

let dir: string;
let server: http.Server;
let socket: string;
const seen: Seen[] = [];
let paths: Record<string, Record<string, Operation>>;
const validators = new Map<string, ValidateFunction>();

function operationFor(method: string, url: string): { template: string; op: Operation } | undefined {
  for (const [template, ops] of Object.entries(paths)) {
    const re = new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`);
    const op = ops[method.toLowerCase()];
    if (re.test(url) && op) return { template, op };
  }
  return undefined;
}

before(async () => {
  const spec = parse(await readFile(SPEC, 'utf8')) as {
    paths: Record<string, Record<string, Operation>>;
    definitions: Record<string, unknown>;
  };
  paths = spec.paths;
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addSchema({ definitions: closed(spec.definitions) }, 'firecracker');
  const validatorFor = (ref: string) => {
    let v = validators.get(ref);
    if (!v) {
      v = ajv.getSchema(`firecracker${ref}`);
      if (!v) throw new Error(`no schema ${ref}`);
      validators.set(ref, v);
    }
    return v;
  };
  dir = await mkdtemp(path.join(os.tmpdir(), 'bx-fc-'));
  socket = path.join(dir, 'api.sock');
  server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (d: Buffer) => (text += d.toString()));
    req.on('end', () => {
      const s: Seen = { method: req.method ?? '', path: req.url ?? '', problems: [] };
      seen.push(s);
      const found = operationFor(s.method, s.path);
      if (!found) s.problems.push('not an operation of the Firecracker API');
      else {
        s.operationId = found.op.operationId;
        const body = found.op.parameters?.find((p) => p.in === 'body');
        if (body?.schema && text === '' && body.required) s.problems.push('the body is required');
        if (body?.schema && text !== '') {
          if (req.headers['content-type'] !== 'application/json') s.problems.push('content-type is not JSON');
          const validate = validatorFor(body.schema.$ref);
          s.body = JSON.parse(text) as Record<string, unknown>;
          if (!validate(s.body))
            s.problems.push(...(validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}`));
        }
        if (!body && text !== '') s.problems.push('a body where the API takes none');
      }
      if (s.problems.length) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ fault_message: s.problems.join('; ') }));
      } else if (s.operationId === 'getFirecrackerVersion') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ firecracker_version: '1.17.0' }));
      } else if (s.operationId === 'describeBalloonStats') {
        res.writeHead(200, { 'content-type': 'application/json' });
        const stats = { target_pages: 8192, actual_pages: 8192, target_mib: 32, actual_mib: 32 };
        res.end(JSON.stringify({ ...stats, free_memory: 50 * 2 ** 20, total_memory: 350 * 2 ** 20 }));
      } else {
        res.writeHead(204);
        res.end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
});

after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rm(dir, { recursive: true, force: true });
});

function launch(network: boolean): VmLaunch {
  return {
    shape: { memoryMiB: 352, vcpus: 2 },
    guest: {
      kernel: '/var/lib/boxcar/vm/guest/k/vmlinux',
      initrd: '/var/lib/boxcar/vm/guest/k/initramfs.cpio',
      release: '6.1',
      key: 'k',
    },
    files: {
      dir,
      api: socket,
      ctl: path.join(dir, 'ctl.sock'),
      out: path.join(dir, 'out'),
      console: path.join(dir, 'console.log'),
      disk: path.join(dir, 'disk.raw'),
      workspace: path.join(dir, 'workspace.img'),
      pidFile: path.join(dir, 'vmm.pid'),
    },
    network: network
      ? {
          tap: 'tap0',
          mac: '02:fc:00:00:00:01',
          netnsPath: '/var/run/netns/bxn-1',
          rate: { sizeBytes: 100_000_000, refillMs: 1000 },
        }
      : undefined,
  };
}

test('every request of a boot, a snapshot, a restore and the balloon matches Firecracker’s API description', async () => {
  const api = new FirecrackerClient(socket);
  seen.length = 0;
  await configureAndStart(api, launch(true));
  await configureAndStart(api, launch(false));
  await saveSnapshot(api, path.join(dir, 'snap'));
  await loadSnapshot(api, launch(true), path.join(dir, 'snap'));
  await loadSnapshot(api, launch(false), path.join(dir, 'snap'));
  const vmm = new FirecrackerVmm();
  await vmm.setBalloon(launch(false), 200);
  const stats = await vmm.balloonStats(launch(false));
  assert.equal(stats.actualBytes, (352 - 32) * 2 ** 20, 'the guest keeps its size minus the balloon');
  assert.deepEqual(await api.version(), { firecracker_version: '1.17.0' });
  for (const s of seen) assert.deepEqual(s.problems, [], `${s.method} ${s.path}`);
  const ops = new Set(seen.map((s) => s.operationId));
  // Each client method, at least once.
  const expected = [
    'putMachineConfiguration', 'putGuestBootSource', 'putGuestDriveByID', 'patchGuestDriveByID',
    'putGuestNetworkInterfaceByID', 'putBalloon', 'patchBalloon', 'describeBalloonStats', 'putGuestVsock',
    'createSyncAction', 'patchVm', 'createSnapshot', 'loadSnapshot', 'getFirecrackerVersion',
  ]; // prettier-ignore
  assert.deepEqual([...ops].sort(), expected.sort());
  const netPut = seen.find((s) => s.operationId === 'putGuestNetworkInterfaceByID');
  const bucket = { size: 100_000_000, refill_time: 1000 };
  assert.deepEqual(
    netPut?.body?.rx_rate_limiter,
    { bandwidth: bucket },
    'the seed’s limiter, into the guest',
  );
  assert.deepEqual(netPut?.body?.tx_rate_limiter, { bandwidth: bucket }, 'and out of it');
  // Every VM has its workspace disk after its root disk, and a restore points both at the job's.
  const drives = (id: string) => seen.filter((s) => s.path === `/drives/${id}`).map((s) => s.method);
  assert.deepEqual(drives('root'), ['PUT', 'PUT', 'PATCH', 'PATCH']);
  assert.deepEqual(drives('workspace'), ['PUT', 'PUT', 'PATCH', 'PATCH']);
  const order = seen.filter((s) => s.path.startsWith('/drives/')).map((s) => s.path);
  assert.equal(order[0], '/drives/root', 'the root disk first: the guest names it vda');
});

test('the check can fail: an unknown field, a missing required one and an unknown path are refused', async () => {
  const api = new FirecrackerClient(socket);
  await assert.rejects(api.request('PUT', '/balloon', { amount_mib: 0 }), /deflate_on_oom/);
  await assert.rejects(
    api.request('PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 128, memory: 1 }),
    /additional/,
  );
  await assert.rejects(api.request('PUT', '/machine-config', { vcpu_count: 64, mem_size_mib: 128 }), /<= 32/);
  await assert.rejects(api.request('PUT', '/no-such-thing', {}), /not an operation/);
});
