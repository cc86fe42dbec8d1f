import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';

/** An open Server-Sent Events response; `gone` aborts when the browser leaves or the server closes. */
export interface EventStream {
  /** Waits for a slow browser rather than buffering for it. */
  send(data: unknown, event?: string): Promise<void>;
  gone: AbortSignal;
  end(): void;
}

export function openEventStream(
  req: IncomingMessage,
  res: ServerResponse,
  closing: AbortSignal,
): EventStream {
  const gone = new AbortController();
  req.on('close', () => gone.abort());
  if (closing.aborted) gone.abort();
  else closing.addEventListener('abort', () => gone.abort(), { once: true, signal: gone.signal });
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
