import { watch, type FSWatcher } from 'node:fs';
import { ifExistsSync } from './errors.js';

/**
 * Waits for something to change in a directory or file (inotify). Arm it *before* checking
 * the condition, then `wait`: a change between the check and the wait is not lost. The
 * timeout covers filesystems where inotify says nothing.
 */
export class ChangeWatcher {
  private watcher: FSWatcher | undefined;
  private changed = false;
  private wake: (() => void) | undefined;

  constructor(target: string) {
    // A target that does not exist yet is waited for by the timeout alone.
    this.watcher = ifExistsSync(() => watch(target, { persistent: false }, () => this.fire()));
    this.watcher?.on('error', () => this.fire()); // a vanished target is a change: re-check
  }

  private fire(): void {
    this.changed = true;
    this.wake?.();
  }

  /** Resolves at the first change since the last wait (or since arming), or after `timeoutMs`. */
  wait(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (this.changed || signal?.aborted) {
      this.changed = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        this.wake = undefined;
        this.changed = false;
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal?.addEventListener('abort', done, { once: true });
      this.wake = done;
    });
  }

  close(): void {
    this.watcher?.close();
  }
}
