import type { Command } from 'commander';
import type { JobView } from '../api/job-view.js';
import { UserError, errorMessage } from '../lib/errors.js';
import { isTerminal } from '../jobs/states.js';
import type { OutputChunk } from '../lib/follow.js';

export interface ServerFlags {
  server?: string;
  token?: string;
}

export function addServerFlags(cmd: Command): Command {
  return cmd
    .option('--server <url>', 'a boxcar serve URL, e.g. http://127.0.0.1:8080 (or BOXCAR_SERVER)')
    .option('--token <token>', 'your API token (or BOXCAR_TOKEN)');
}

/**
 * The CLI's side of the HTTP API: `--server` and `--token` (or BOXCAR_SERVER, BOXCAR_TOKEN),
 * and the server's errors turned into one-line user errors.
 */
export class ApiClient {
  private constructor(
    private readonly base: string,
    private readonly token: string,
  ) {}

  static from(flags: ServerFlags): ApiClient {
    const server = flags.server ?? process.env.BOXCAR_SERVER;
    const token = flags.token ?? process.env.BOXCAR_TOKEN;
    if (!server)
      throw new UserError('missing --server URL (or BOXCAR_SERVER), e.g. --server http://127.0.0.1:8080');
    if (!token)
      throw new UserError(
        'missing --token (or BOXCAR_TOKEN); create one with `boxcar token create --tenant NAME`',
      );
    let url: URL;
    try {
      url = new URL(server);
    } catch {
      throw new UserError(`--server ${server}: not a URL; use e.g. http://127.0.0.1:8080`);
    }
    return new ApiClient(url.toString().replace(/\/$/, ''), token);
  }

  private async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${this.token}`, ...init.headers },
      });
    } catch (err) {
      throw new UserError(
        `cannot reach ${this.base}: ${errorMessage((err as Error).cause ?? err)}; is boxcar serve running?`,
      );
    }
    if (res.ok) return res;
    const body = await res.text();
    let message = body;
    try {
      message = (JSON.parse(body) as { error?: string }).error ?? body;
    } catch {
      // not JSON: the body as it is
    }
    throw new UserError(`${this.base} said ${res.status}: ${message}`);
  }

  async json<T>(path: string, init: RequestInit = {}): Promise<T> {
    return (await (await this.fetch(path, init)).json()) as T;
  }

  async text(path: string): Promise<string> {
    return (await this.fetch(path)).text();
  }

  submitYaml(text: string): Promise<JobView> {
    return this.json('/v1/jobs', {
      method: 'POST',
      headers: { 'content-type': 'application/yaml' },
      body: text,
    });
  }

  submitJson(input: unknown): Promise<JobView> {
    return this.json('/v1/jobs', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(input),
    });
  }

  /** Waits (long polls) until the job has finished. */
  async waitFor(id: string): Promise<JobView> {
    for (;;) {
      const job = await this.json<JobView>(`/v1/jobs/${encodeURIComponent(id)}?wait=60s`);
      if (isTerminal(job.state)) return job;
    }
  }

  /** Follows a job's output live (Server-Sent Events); returns the finished job. */
  async follow(id: string, onChunk: (c: OutputChunk) => void): Promise<JobView> {
    const res = await this.fetch(`/v1/jobs/${encodeURIComponent(id)}/logs?follow=true`, {
      headers: { accept: 'text/event-stream' },
    });
    if (!res.body) throw new UserError('the server sent no log stream');
    const decoder = new TextDecoder();
    let buffer = '';
    let ended: JobView | undefined;
    for await (const bytes of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(bytes, { stream: true });
      let cut: number;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const type = /^event: (.*)$/m.exec(event)?.[1] ?? 'message';
        const data = /^data: (.*)$/m.exec(event)?.[1];
        if (data === undefined) continue;
        if (type === 'end') ended = JSON.parse(data) as JobView;
        else onChunk(JSON.parse(data) as OutputChunk);
      }
    }
    return ended ?? this.waitFor(id);
  }
}
