import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';

/** An open Server-Sent Events response; `gone` aborts when the browser leaves. */
export interface EventStream {
  /** Waits for a slow browser rather than buffering for it. */
  send(data: unknown, event?: string): Promise<void>;
  gone: AbortSignal;
  end(): void;
}

export function openEventStream(req: IncomingMessage, res: ServerResponse): EventStream {
  const gone = new AbortController();
  req.on('close', () => gone.abort());
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'x-content-type-options': 'nosniff',
    connection: 'keep-alive',
  });
  res.flushHeaders(); // the page knows the stream is open before anything happens
  return {
    gone: gone.signal,
    async send(data, event) {
      if (gone.signal.aborted) return;
      const text = `${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`;
      if (res.write(text)) return;
      try {
        await once(res, 'drain', { signal: gone.signal });
      } catch (err) {
        if (!gone.signal.aborted) throw err; // the browser went away: nothing more to send
      }
    },
    end: () => res.end(),
  };
}
