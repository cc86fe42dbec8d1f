import type { FastifyInstance } from 'fastify';
import type { ImageStore } from '../images/image-store.js';
import type { PeerSwarm } from '../images/peers/swarm.js';
import { servePiece } from '../images/peers/serve-piece.js';

const DIGEST = /^sha256:[0-9a-f]{64}$/;

/**
 * `GET /peer/v1/blobs/DIGEST` with one `Range`: the bytes of a blob this node holds, or of a
 * piece it is fetching (sent as it arrives), for another node of the same store. Only nodes
 * may ask (their credential from the store's peer directory); tenants' tokens are no use here.
 */
export function registerPeerBlobs(app: FastifyInstance, images: ImageStore, swarm: PeerSwarm): void {
  app.get<{ Params: { digest: string } }>('/peer/v1/blobs/:digest', async (req, reply) => {
    const peer = await swarm.node.authenticate(req.headers);
    if (!peer) return reply.code(401).send({ error: 'peer requests need a node’s credential' });
    const { digest } = req.params;
    if (!DIGEST.test(digest)) return reply.code(400).send({ error: 'the digest must be sha256:<64 hex>' });
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (!m) return reply.code(416).send({ error: 'send one range: Range: bytes=START-END' });
    const start = Number(m[1]);
    const end = Number(m[2]) + 1;
    if (end <= start) return reply.code(416).send({ error: 'the range is empty' });
    const served = await servePiece(images, swarm.transfers, digest, start, end);
    if (!served) return reply.code(404).send({ error: 'this node does not hold that range' });
    return reply
      .code(206)
      .header('content-type', 'application/octet-stream')
      .header('content-range', `bytes ${start}-${end - 1}/${served.size}`)
      .send(served.body);
  });
}
