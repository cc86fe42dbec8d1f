import type { Logger } from '../../observability/logger.js';

/**
 * How a pool follows demand: each key keeps as many idle sandboxes as jobs asked for it in the
 * last `burstMs` (at least one, at most the pool's size), and a key no job asked for in
 * `idleMs` gives its sandboxes back. Without it, every key is kept full.
 */
export interface PoolDemand {
  burstMs: number;
  idleMs: number;
  now?: () => number;
}

/**
 * Idle sandboxes ready for a job (microVMs, containers), by key (their shape and image): `take`
 * hands one over; `refill` tops the key up in the background once the job has started (a refill
 * beside a job's start would slow that start down). Refills of one key run one at a time; a
 * failed one is logged.
 */
export class IdlePool<T> {
  private readonly idle = new Map<string, T[]>();
  private readonly filling = new Map<string, Promise<void>>();
  /** When jobs asked for each key (taken or not), within the demand's window. */
  private readonly asked = new Map<string, number[]>();
  private readonly expiry: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly size: number,
    private readonly create: (key: string) => Promise<T>,
    private readonly dispose: (vm: T) => Promise<void>,
    private readonly logger: Logger,
    private readonly demand?: PoolDemand,
  ) {
    if (demand && size > 0)
      this.expiry = setInterval(() => void this.expire(), Math.max(1000, demand.idleMs / 4)).unref();
  }

  private now(): number {
    return this.demand?.now?.() ?? Date.now();
  }

  /** How many idle sandboxes `key` should have now. */
  target(key: string): number {
    if (!this.demand) return this.size;
    const since = this.now() - this.demand.burstMs;
    const recent = (this.asked.get(key) ?? []).filter((t) => t >= since).length;
    return Math.min(this.size, Math.max(1, recent));
  }

  /** Gives back the sandboxes of keys no job asked for within the demand's `idleMs`. */
  async expire(): Promise<void> {
    if (!this.demand) return;
    const now = this.now();
    for (const [key, times] of this.asked) {
      if (now - (times.at(-1) ?? 0) < this.demand.idleMs || this.filling.has(key)) continue;
      this.asked.delete(key);
      const members = this.idle.get(key) ?? [];
      this.idle.delete(key);
      for (const m of members)
        await this.dispose(m).catch((err: unknown) =>
          this.logger.warn({ err, key }, 'giving back an idle pooled sandbox failed'),
        );
    }
  }

  get enabled(): boolean {
    return this.size > 0;
  }

  idleCount(key?: string): number {
    if (key !== undefined) return this.idle.get(key)?.length ?? 0;
    return [...this.idle.values()].reduce((n, l) => n + l.length, 0);
  }

  /** Keys being topped up now. */
  fillingCount(): number {
    return this.filling.size;
  }

  /** Every idle sandbox with its key. */
  entries(): Array<{ key: string; member: T }> {
    return [...this.idle].flatMap(([key, list]) => list.map((member) => ({ key, member })));
  }

  /** An idle sandbox of `key`, if any; the caller refills (`refill`) once its job has started. */
  take(key: string): T | undefined {
    if (!this.enabled || this.closed) return undefined;
    if (this.demand) {
      const now = this.now();
      const since = now - this.demand.burstMs;
      this.asked.set(key, [...(this.asked.get(key) ?? []).filter((t) => t >= since), now]);
    }
    return this.idle.get(key)?.shift();
  }

  /** Tops `key` up in the background (after a take, or a miss: the next job of it will find one). */
  refill(key: string): void {
    this.fill(key).catch((err: unknown) => this.logger.warn({ err, key }, 'refilling a warm pool failed'));
  }

  /** Tops `key` up to its target; resolves when it is full (or closed). */
  fill(key: string): Promise<void> {
    if (!this.enabled || this.closed) return Promise.resolve();
    let running = this.filling.get(key);
    if (!running) {
      const top = async () => {
        while (!this.closed && this.idleCount(key) < this.target(key)) {
          const vm = await this.create(key);
          if (this.closed) await this.dispose(vm);
          else this.idle.set(key, [...(this.idle.get(key) ?? []), vm]);
        }
      };
      // `finally` runs after `set` even when there is nothing to do (a full pool).
      running = top().finally(() => this.filling.delete(key));
      this.filling.set(key, running);
    }
    return running;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.expiry);
    await Promise.allSettled([...this.filling.values()]);
    const all = [...this.idle.values()].flat();
    this.idle.clear();
    for (const vm of all) await this.dispose(vm);
  }
}
