import type { FastifyReply } from 'fastify';
import { messagePage } from './pages/login.js';

/** A page: never cached (it shows a tenant's jobs), UTF-8. */
export const sendHtml = (reply: FastifyReply, body: string, code = 200) =>
  reply.code(code).header('cache-control', 'no-store').type('text/html; charset=utf-8').send(body);

export const sendNotFound = (reply: FastifyReply, what: string) =>
  sendHtml(reply, messagePage('Not found', `No ${what}.`), 404);
