import { readFile } from 'node:fs/promises';
import { errorMessage } from './errors.js';
import { run } from './exec.js';

export interface SystemUser {
  name: string;
  uid: number;
  gid: number;
}

async function lookup(name: string): Promise<SystemUser | undefined> {
  for (const line of (await readFile('/etc/passwd', 'utf8')).split('\n')) {
    const [user, , uid, gid] = line.split(':');
    if (user === name) return { name, uid: Number(uid), gid: Number(gid) };
  }
  return undefined;
}

/**
 * A system account for processes Boxcar starts unprivileged: created the first time (no home,
 * no login shell, a group of its own), found thereafter. Safe when two Boxcars race to create it.
 */
export async function ensureSystemUser(name: string): Promise<SystemUser> {
  const found = await lookup(name);
  if (found) return found;
  let why = '';
  try {
    await run('useradd', [
      '--system',
      '--user-group',
      '--no-create-home',
      '--home-dir',
      '/nonexistent',
      '--shell',
      '/usr/sbin/nologin',
      '--comment',
      'Boxcar sandboxed workers',
      name,
    ]);
  } catch (err) {
    why = errorMessage(err); // another Boxcar may have created it meanwhile: looked up again
  }
  const made = await lookup(name);
  if (!made)
    throw new Error(`cannot create the system user ${name} (${why}); create it with useradd --system`);
  if (made.uid === 0 || made.gid === 0)
    throw new Error(`the system user ${name} has uid or gid 0: it must not`);
  return made;
}
