import type { Logger } from '../../observability/logger.js';

/**
 * Idle sandboxes ready for a job (microVMs, containers), by key (their shape and image): `take`
 * hands one over; `refill` tops the key up in the background once the job has started (a refill
 * beside a job's start would slow that start down). Refills of one key run one at a time; a
 * failed one is logged.
 */
export class IdlePool<T> {
  private readonly idle = new Map<string, T[]>();
  private readonly filling = new Map<string, Promise<void>>();
  private closed = false;

  constructor(
    private readonly size: number,
    private readonly create: (key: string) => Promise<T>,
    private readonly dispose: (vm: T) => Promise<void>,
    private readonly logger: Logger,
  ) {}

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
    return this.idle.get(key)?.shift();
  }

  /** Tops `key` up in the background (after a take, or a miss: the next job of it will find one). */
  refill(key: string): void {
    this.fill(key).catch((err: unknown) => this.logger.warn({ err, key }, 'refilling a warm pool failed'));
  }

  /** Tops `key` up to the pool size; resolves when it is full (or closed). */
  fill(key: string): Promise<void> {
    if (!this.enabled || this.closed) return Promise.resolve();
    let running = this.filling.get(key);
    if (!running) {
      const top = async () => {
        while (!this.closed && this.idleCount(key) < this.size) {
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
    await Promise.allSettled([...this.filling.values()]);
    const all = [...this.idle.values()].flat();
    this.idle.clear();
    for (const vm of all) await this.dispose(vm);
  }
}
