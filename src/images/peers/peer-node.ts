import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from '../../observability/logger.js';
import type { PeerDirectory } from '../../store/store.js';

/** How often a node renews its announcement, and how long one lasts without renewal. */
const BEAT_MS = 1000;
const ALIVE_MS = 5000;
const NODE_HEADER = 'x-boxcar-node';

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * This node as a peer: its id, the secret it proves itself with to other nodes (only its hash
 * is in the store, and it is new at every start), and the heartbeat that keeps its
 * announcement alive. A node that does not serve (url null) still announces itself, so the
 * peers it fetches from can tell it from a stranger.
 */
export class PeerNode {
  private readonly secret = randomBytes(32).toString('base64url');
  private beat: NodeJS.Timeout | undefined;
  url: string | null = null;

  constructor(
    private readonly store: PeerDirectory,
    private readonly logger: Logger,
    /** This process as a peer (its owner id: new at every start, see the comment above). */
    readonly id: string,
  ) {}

  get serving(): boolean {
    return this.url !== null;
  }

  async start(): Promise<void> {
    await this.announce();
    this.beat = setInterval(() => {
      this.announce().catch((err: unknown) =>
        this.logger.warn({ err }, 'renewing this node’s peer announcement failed; retrying'),
      );
    }, BEAT_MS);
    this.beat.unref();
  }

  /** Starts serving pieces at `url` (once the API listens). */
  async serveAt(url: string): Promise<void> {
    this.url = url.replace(/\/+$/, '');
    await this.announce();
  }

  async stop(): Promise<void> {
    clearInterval(this.beat);
    await this.store.withdrawPeer(this.id);
  }

  /** The headers of a request to a peer: who this node is, and its proof. */
  headers(): Record<string, string> {
    return { [NODE_HEADER]: this.id, authorization: `Bearer ${this.secret}` };
  }

  /** The peer a request comes from, if its credential is a live peer's; undefined otherwise. */
  async authenticate(headers: Record<string, string | string[] | undefined>): Promise<string | undefined> {
    const node = headers[NODE_HEADER];
    const token = /^Bearer (\S+)$/.exec(String(headers.authorization ?? ''))?.[1];
    if (typeof node !== 'string' || !token) return undefined;
    const peer = await this.store.livePeer(node, Date.now());
    if (!peer) return undefined;
    const a = Buffer.from(peer.tokenHash, 'hex');
    const b = Buffer.from(sha256(token), 'hex');
    return a.length === b.length && timingSafeEqual(a, b) ? node : undefined;
  }

  private announce(): Promise<void> {
    return this.store.announcePeer({
      node: this.id,
      url: this.url,
      tokenHash: sha256(this.secret),
      aliveUntil: Date.now() + ALIVE_MS,
    });
  }
}
