import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { tokenHash } from '../api/tokens.js';
import type { Boxcar } from '../boxcar.js';
import { loginPage, messagePage } from './pages/login.js';
import { sendHtml } from './respond.js';
import { SESSION_COOKIE, SESSION_TTL_MS, Sessions, cookieValue } from './sessions.js';
import type { Viewer } from './viewer.js';

const LoginForm = z.object({
  token: z.string().trim().min(1, 'enter an API token').max(512, 'too long for a token'),
});

/**
 * The dashboard's login: an API token posted in a form (field `token`) opens a session kept in
 * this process; the browser holds only its random id, in an HttpOnly, SameSite=Strict cookie.
 * Returns how to tell who is logged in on a request.
 */
export function registerAuth(
  app: FastifyInstance,
  box: Boxcar,
): (req: FastifyRequest) => Promise<Viewer | undefined> {
  const sessions = new Sessions();
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) =>
    done(null, Object.fromEntries(new URLSearchParams(body as string))),
  );
  // A form posted from another site is refused even before SameSite would keep the cookie away
  // (a login form posted cross-site would otherwise log the browser in as someone else).
  app.addHook('preHandler', async (req, reply) => {
    const origin = req.headers.origin;
    // `Origin: null` (a sandboxed frame, a privacy redirect) is no origin of this server's either.
    const foreign =
      origin !== undefined && (!URL.canParse(origin) || new URL(origin).host !== req.headers.host);
    if (req.method === 'POST' && foreign)
      return reply
        .code(403)
        .type('text/html; charset=utf-8')
        .send(messagePage('Refused', 'a form from another site'));
  });
  /** The logged-in viewer, if the session is live and its token still exists (revoking logs out). */
  const viewerOf = async (req: FastifyRequest): Promise<Viewer | undefined> => {
    const s = sessions.get(cookieValue(req.headers.cookie, SESSION_COOKIE));
    if (!s) return undefined;
    if (await box.store.tokenByHash(s.tokenHash)) return s;
    sessions.delete(s.id);
    return undefined;
  };
  app.get('/ui/login', async (req, reply) =>
    (await viewerOf(req)) ? reply.redirect('/', 303) : sendHtml(reply, loginPage()),
  );
  app.post('/ui/login', async (req, reply) => {
    const form = LoginForm.safeParse(req.body ?? {});
    if (!form.success)
      return sendHtml(reply, loginPage(form.error.issues[0]?.message ?? 'enter an API token'), 400);
    const token = await box.store.tokenByHash(tokenHash(form.data.token));
    if (!token || (token.role === 'tenant' && !token.tenant)) {
      box.logger.warn({ ip: req.ip }, 'dashboard login refused: unknown API token');
      return sendHtml(reply, loginPage('Unknown API token: create one with `boxcar token create`.'), 401);
    }
    const s = sessions.create(token);
    const secure = req.protocol === 'https' ? '; Secure' : '';
    reply.header(
      'set-cookie',
      `${SESSION_COOKIE}=${s.id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${SESSION_TTL_MS / 1000}${secure}`,
    );
    box.logger.info({ token: token.id, tenant: token.tenant }, 'dashboard login');
    return reply.redirect('/', 303);
  });
  app.post('/ui/logout', async (req, reply) => {
    const id = cookieValue(req.headers.cookie, SESSION_COOKIE);
    if (id) sessions.delete(id);
    reply.header('set-cookie', `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`);
    return reply.redirect('/ui/login', 303);
  });

  return viewerOf;
}
