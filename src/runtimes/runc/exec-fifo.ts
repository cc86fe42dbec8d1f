import { constants, openSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import { processAlive } from '../../lib/proc.js';

/** How often a wait on the FIFO checks that the container's init still lives (as runc does). */
const CHECK_MS = 100;

/**
 * What `runc start` does, without starting a runc process (a Go binary: ~10 ms of CPU per job
 * on these hosts): a created container's init waits to open its `exec.fifo` for writing; a
 * reader lets it write one byte and exec the container's process, whose exec closes the FIFO.
 * Reading to that end and removing the FIFO is the start (runc's own `exec()` in
 * libcontainer/container_linux.go). The FIFO is opened non-blocking and read through the event
 * loop, so an init that died never holds a thread; that is checked every 100 ms.
 */
export async function startThroughExecFifo(fifo: string, initPid: number): Promise<void> {
  const fd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const pipe = new net.Socket({ fd, readable: true, writable: false });
  let bytes = 0;
  let check: NodeJS.Timeout | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      pipe.on('data', (d: Buffer) => (bytes += d.length));
      pipe.on('end', resolve);
      pipe.on('error', reject);
      // A process that started and ended between two checks has left its byte and end in the
      // pipe: a dead init fails the start only at the check after, once those had their turn.
      let deadBefore = false;
      check = setInterval(() => {
        if (processAlive(initPid)) return;
        if (deadBefore)
          reject(new Error(`the container's init (pid ${initPid}) died before its process started`));
        deadBefore = true;
      }, CHECK_MS);
    });
  } finally {
    clearInterval(check);
    pipe.destroy();
  }
  // An end with nothing read: the init had already started its process (runc's words).
  if (bytes === 0) throw new Error('cannot start an already running container');
  await rm(fifo);
}
