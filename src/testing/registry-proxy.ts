import http from 'node:http';

export type Fault =
  | 'cut'
  | 'cut-then-ignore-range'
  | 'ignore-range'
  | 'corrupt'
  | 'long'
  | 'redirect'
  | 'huge-manifest'
  | 'token-elsewhere';

/**
 * A proxy in front of a registry, on 127.0.0.1, and an "elsewhere" server on 127.0.0.2. It
 * counts blob requests and the bytes of blobs it sent (the registry's egress), injects faults,
 * and can send blobs no faster than `rate` bytes a second (a slow link).
 */
export class RegistryProxy {
  readonly blobGets = new Map<string, number>();
  /** Bytes of each blob sent to clients. */
  readonly blobBytes = new Map<string, number>();
  rate: number | undefined;
  readonly ranges: string[] = [];
  readonly faults = new Map<string, Fault>();
  /** What reached the other host: the Authorization header of each request, or "none". */
  readonly elsewhere: string[] = [];
  fault: Fault | undefined;
  host = '';
  private server = http.createServer((req, res) => void this.handle(req, res));
  private other = http.createServer((req, res) => void this.serveElsewhere(req, res));
  private otherPort = 0;

  constructor(private readonly upstream: string) {}

  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => this.other.listen(0, '127.0.0.2', r));
    this.host = `127.0.0.1:${(this.server.address() as { port: number }).port}`;
    this.otherPort = (this.other.address() as { port: number }).port;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    this.other.closeAllConnections();
    await Promise.all([new Promise((r) => this.server.close(r)), new Promise((r) => this.other.close(r))]);
  }

  private async forward(req: http.IncomingMessage, pathname: string): Promise<Response> {
    const headers: Record<string, string> = {};
    for (const k of ['accept', 'range', 'authorization'])
      if (req.headers[k]) headers[k] = String(req.headers[k]);
    if (this.faults.get(/\/blobs\/(sha256:[0-9a-f]{64})$/.exec(pathname)?.[1] ?? '') === 'ignore-range')
      delete headers.range;
    return fetch(`http://${this.upstream}${pathname}`, { headers });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    if (this.fault === 'token-elsewhere' && req.headers.authorization !== 'Bearer good-token') {
      res.writeHead(401, {
        'www-authenticate': `Bearer realm="http://127.0.0.2:${this.otherPort}/token",service="test",scope="repository:x:pull"`,
      });
      return void res.end();
    }
    const blob = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url)?.[1];
    if (blob) {
      this.blobGets.set(blob, (this.blobGets.get(blob) ?? 0) + 1);
      if (req.headers.range) this.ranges.push(String(req.headers.range));
    }
    const fault = blob
      ? this.faults.get(blob)
      : url.includes('/manifests/')
        ? this.faults.get('manifest')
        : undefined;
    if (fault === 'huge-manifest') {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' });
      return void res.end(JSON.stringify({ schemaVersion: 2, padding: 'x'.repeat(5 * 2 ** 20) }));
    }
    if (fault === 'redirect' && blob) {
      res.writeHead(307, { location: `http://127.0.0.2:${this.otherPort}/blob${url}` });
      return void res.end();
    }
    const up = await this.forward(req, url);
    const body = Buffer.from(await up.arrayBuffer());
    const headers: Record<string, string> = {};
    up.headers.forEach((v, k) => {
      if (!['content-length', 'transfer-encoding', 'connection'].includes(k)) headers[k] = v;
    });
    if ((fault === 'cut' || fault === 'cut-then-ignore-range') && blob) {
      // Once: the retry gets the rest, or the whole blob again from a registry ignoring ranges.
      if (fault === 'cut') this.faults.delete(blob);
      else this.faults.set(blob, 'ignore-range');
      res.writeHead(200, { ...headers, 'content-length': String(body.length) });
      // The cut-off first try of a registry ignoring ranges may differ from its whole retry.
      const half = body.subarray(0, body.length >> 1);
      res.write(fault === 'cut' ? half : Buffer.from(half.map((b, i) => (i % 4096 === 1000 ? b ^ 0xff : b))));
      setTimeout(() => res.socket?.destroy(), 50);
      return;
    }
    let out = body;
    if (fault === 'corrupt') out = Buffer.from(body.map((b, i) => (i === 100 ? b ^ 0xff : b)));
    if (fault === 'long') out = Buffer.concat([body, Buffer.alloc(4096, 1)]);
    res.writeHead(up.status, { ...headers, 'content-length': String(out.length) });
    if (!blob) return void res.end(out);
    const step = 64 * 1024;
    for (let at = 0; at < out.length && !res.destroyed; at += step) {
      const chunk = out.subarray(at, at + step);
      if (this.rate) await new Promise((r) => setTimeout(r, (chunk.length / (this.rate as number)) * 1000));
      if (res.destroyed) break;
      res.write(chunk);
      this.blobBytes.set(blob, (this.blobBytes.get(blob) ?? 0) + chunk.length);
    }
    res.end();
  }

  /** Bytes of blobs sent to clients, all told. */
  get egress(): number {
    let n = 0;
    for (const b of this.blobBytes.values()) n += b;
    return n;
  }

  private async serveElsewhere(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.elsewhere.push(req.headers.authorization ?? 'none');
    const url = req.url ?? '/';
    if (url.startsWith('/token')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      return void res.end(JSON.stringify({ token: 'good-token', expires_in: 300 }));
    }
    const up = await this.forward({ headers: {} } as http.IncomingMessage, url.replace(/^\/blob/, ''));
    res.writeHead(up.status);
    res.end(Buffer.from(await up.arrayBuffer()));
  }
}
