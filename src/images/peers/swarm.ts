import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { errorMessage } from '../../lib/errors.js';
import { sleep } from '../../lib/exec.js';
import { PaceCancelled } from '../../lib/pace.js';
import type { Logger } from '../../observability/logger.js';
import type { BlobHolding, PeerDirectory, PieceClaim } from '../../store/store.js';
import type { BlobDescriptor, BlobFetcher, FetchedBytes, FetchOptions } from '../blob-fetcher.js';
import type { ImageReference } from '../reference.js';
import { RegistryError, type RegistryClient } from '../registry-client.js';
import type { PeerNode } from './peer-node.js';
import { PieceMap } from './pieces.js';
import { Transfers, type Transfer } from './transfers.js';

export interface SwarmOptions {
  pieceSize: number;
  /** A peer that sends nothing for this long is dropped; its pieces come from elsewhere. */
  stallMs: number;
  /** Pieces this node fetches from the registry at once, per blob. */
  originConcurrency: number;
  /** Pieces in flight at once per blob, from every source. */
  concurrency: number;
  /** Pieces in flight at once from one peer, per blob. */
  perPeer: number;
  /** How often the directory is read again while pieces are missing. */
  refreshMs: number;
}

export const DEFAULT_SWARM: SwarmOptions = {
  pieceSize: 4 * 2 ** 20,
  stallMs: 1000,
  originConcurrency: 4,
  concurrency: 8,
  perPeer: 3,
  refreshMs: 100,
};

/** A claimed piece not fetched after this long may be claimed by another node. */
const CLAIM_STALE_MS = 30_000;

type Source = { kind: 'origin'; claimed: boolean } | { kind: 'peer'; node: string; url: string };

/**
 * Blobs fetched in pieces from the registry and from peers at once, with the store as the
 * directory and no scheduler: each node claims the pieces it fetches from the registry (one
 * node per piece), takes the others from whichever peer holds them (or is fetching them: a
 * peer serves a piece while it arrives), and publishes what it holds as it goes. A peer that
 * stalls or sends bad bytes is dropped and its pieces come from the registry. The whole blob's
 * digest is checked before it is used.
 */
export class PeerSwarm implements BlobFetcher {
  readonly transfers = new Transfers();

  constructor(
    readonly node: PeerNode,
    private readonly directory: PeerDirectory,
    private readonly client: RegistryClient,
    private readonly logger: Logger,
    readonly opts: SwarmOptions = DEFAULT_SWARM,
  ) {}

  fetch(ref: ImageReference, blob: BlobDescriptor, file: string, opts: FetchOptions): Promise<FetchedBytes> {
    const client = this.client.as(opts.identity);
    return new BlobTransfer(this, this.directory, client, this.logger, ref, blob, file, opts).run();
  }

  /** The blob is in the store (its peers may take it from there now), or its pull failed. */
  async settled(blob: BlobDescriptor, stored: boolean): Promise<void> {
    this.transfers.end(blob.digest);
    if (!this.node.serving) return;
    await (
      stored
        ? this.directory.holdBlob({
            node: this.node.id,
            digest: blob.digest,
            size: blob.size,
            complete: true,
            pieces: '',
          })
        : this.directory.dropBlob(this.node.id, blob.digest)
    ).catch((err: unknown) =>
      this.logger.warn({ err, digest: blob.digest }, 'publishing a blob to peers failed'),
    );
  }

  /** Offers every blob this node already holds (at its start). */
  async publish(blobs: BlobDescriptor[]): Promise<void> {
    for (const b of blobs)
      await this.directory.holdBlob({
        node: this.node.id,
        digest: b.digest,
        size: b.size,
        complete: true,
        pieces: '',
      });
  }
}

/** One blob's transfer: the pieces, where each comes from, and the loop that fills them. */
class BlobTransfer {
  private readonly pieces: PieceMap;
  private readonly sources = new Map<number, Source>();
  private readonly inflight = new Map<number, Promise<void>>();
  private readonly dropped = new Set<string>();
  private readonly bytes: FetchedBytes = { origin: 0, peers: 0 };
  private holders: Array<BlobHolding & { url: string }> = [];
  private claims = new Map<number, PieceClaim>();
  private readAt = 0;
  /** After a bad whole-blob digest: every piece from the registry. */
  private originOnly = false;
  private failure: unknown;
  private publishing: Promise<void> | undefined;
  private publishAgain = false;
  private fh!: FileHandle;
  private t!: Transfer;

  constructor(
    private readonly swarm: PeerSwarm,
    private readonly directory: PeerDirectory,
    private readonly client: RegistryClient,
    private readonly logger: Logger,
    private readonly ref: ImageReference,
    private readonly blob: BlobDescriptor,
    private readonly file: string,
    private readonly opts: FetchOptions,
  ) {
    this.pieces = new PieceMap(blob.size, swarm.opts.pieceSize);
  }

  private get me(): string {
    return this.swarm.node.id;
  }

  async run(): Promise<FetchedBytes> {
    this.fh = await open(this.file, 'r+');
    try {
      await this.fh.truncate(this.blob.size);
      this.t = this.swarm.transfers.begin(this.blob.digest, this.file, this.pieces);
      this.publish(); // holding nothing yet, but peers may now take the pieces it claims from it
      for (;;) {
        await this.fill();
        if ((await this.digestOfFile()) === this.blob.digest) break;
        const fromPeers = [...this.sources].filter(([, s]) => s.kind === 'peer');
        if (this.originOnly || fromPeers.length === 0)
          throw new RegistryError(`blob ${this.blob.digest} does not match its digest: refused`);
        // Pieces whose hash nobody published yet could not be checked as they came: fetch
        // every piece that came from a peer again, from the registry.
        this.logger.warn(
          {
            digest: this.blob.digest,
            peers: [...new Set(fromPeers.map(([, s]) => (s as { node: string }).node))],
          },
          'a blob from peers did not match its digest; its peers’ pieces come from the registry',
        );
        this.originOnly = true;
        for (const [i] of fromPeers) {
          this.pieces.set(i, false);
          this.sources.delete(i);
        }
      }
      await this.fh.sync();
      this.opts.available(this.blob.size);
      return this.bytes;
    } finally {
      await Promise.allSettled(this.inflight.values());
      await this.fh.close();
      await this.publishing;
    }
  }

  /** Until every piece is here: start what can start, wait for one to end or the next look. */
  private async fill(): Promise<void> {
    while (!this.pieces.complete) {
      if (this.failure) throw this.failure;
      if (Date.now() - this.readAt >= this.swarm.opts.refreshMs) await this.readDirectory();
      for (let i = 0; i < this.pieces.count && this.inflight.size < this.swarm.opts.concurrency; i++) {
        if (this.pieces.has(i) || this.inflight.has(i)) continue;
        const source = await this.sourceFor(i);
        if (!source) continue;
        this.inflight.set(
          i,
          this.fetchPiece(i, source)
            .catch((err: unknown) => this.pieceFailed(i, source, err))
            .finally(() => this.inflight.delete(i)),
        );
      }
      await Promise.race([...this.inflight.values(), sleep(this.swarm.opts.refreshMs)]);
    }
    await Promise.all(this.inflight.values());
    if (this.failure) throw this.failure;
  }

  private async readDirectory(): Promise<void> {
    const [holders, claims] = await Promise.all([
      this.directory.blobHolders(this.blob.digest, this.me, Date.now()),
      this.directory.pieceClaims(this.blob.digest),
    ]);
    this.holders = holders.filter((h) => !this.dropped.has(h.node));
    this.claims = new Map(claims.map((c) => [c.index, c]));
    this.readAt = Date.now();
  }

  /** Where piece `i` comes from now, if anywhere may take it at this moment. */
  private async sourceFor(i: number): Promise<Source | undefined> {
    const { opts } = this.swarm;
    const busy = (kind: string, node?: string) =>
      [...this.inflight.keys()].filter((j) => {
        const s = this.sources.get(j);
        return s?.kind === kind && (node === undefined || (s.kind === 'peer' && s.node === node));
      }).length;
    if (!this.originOnly) {
      // A peer that has the piece, the least busy first; else the peer fetching it now.
      const having = this.holders
        .filter((h) => h.complete || new PieceMap(h.size, opts.pieceSize, h.pieces).has(i))
        .map((h) => ({ h, load: busy('peer', h.node) }))
        .filter((x) => x.load < opts.perPeer)
        .sort((a, b) => a.load - b.load);
      const claim = this.claims.get(i);
      const claimer =
        claim && claim.node !== this.me ? this.holders.find((h) => h.node === claim.node) : undefined;
      const peer =
        having[0]?.h ?? (claimer && busy('peer', claimer.node) < opts.perPeer ? claimer : undefined);
      if (peer) return this.take(i, { kind: 'peer', node: peer.node, url: peer.url });
      // A live peer claimed it but serves it to nobody yet: wait for it to appear in the directory.
      if (
        claim &&
        claim.node !== this.me &&
        !this.dropped.has(claim.node) &&
        !claimer &&
        !this.claimStale(claim)
      )
        return undefined;
    }
    if (busy('origin') >= opts.originConcurrency) return undefined;
    // Only a node that serves claims pieces: a claim tells peers to take that piece from it.
    if (!this.swarm.node.serving || this.originOnly || this.dropped.has(this.claims.get(i)?.node ?? ''))
      return this.take(i, { kind: 'origin', claimed: false });
    if (await this.directory.claimPiece(this.blob.digest, i, this.me, Date.now(), CLAIM_STALE_MS))
      return this.take(i, { kind: 'origin', claimed: true });
    this.readAt = 0; // someone else took it: look again
    return undefined;
  }

  private claimStale(claim: PieceClaim): boolean {
    return claim.sha256 === null && Date.now() - claim.claimedAt > CLAIM_STALE_MS;
  }

  private take(i: number, source: Source): Source {
    this.sources.set(i, source);
    return source;
  }

  private async fetchPiece(i: number, source: Source): Promise<void> {
    const { start, end } = this.pieces.range(i);
    this.t.writing.set(i, 0);
    const hash = createHash('sha256');
    let at = start;
    const write = async (chunk: Uint8Array) => {
      if (at + chunk.length > end) throw new Error(`sent more than piece ${i}'s ${end - start} bytes`);
      await this.fh.write(chunk, 0, chunk.length, at);
      hash.update(chunk);
      at += chunk.length;
      this.t.writing.set(i, at - start);
      this.t.events.emit('change');
      await this.opts.pace?.(chunk.length);
    };
    if (source.kind === 'origin') await this.fromOrigin(i, write);
    else await this.fromPeer(source, i, write);
    if (at !== end) throw new Error(`piece ${i} ended at byte ${at - start} of ${end - start}`);
    const sha = hash.digest('hex');
    const known = this.claims.get(i)?.sha256;
    if (source.kind === 'peer' && known && known !== sha)
      throw new Error(`piece ${i} does not match its hash`);
    this.pieces.set(i);
    this.t.writing.delete(i);
    this.t.events.emit('change');
    this.bytes[source.kind === 'origin' ? 'origin' : 'peers'] += end - start;
    this.opts.available(this.pieces.contiguousBytes);
    if (source.kind === 'origin' && source.claimed)
      await this.directory.pieceFetched(this.blob.digest, i, this.me, sha);
    this.publish();
  }

  /** A piece from the registry, tried again (from the start of the piece) after a cut. */
  private async fromOrigin(i: number, write: (chunk: Uint8Array) => Promise<void>): Promise<void> {
    const { start, end } = this.pieces.range(i);
    let got = 0;
    for (let attempt = 1; ; attempt++) {
      try {
        for await (const chunk of this.client.blobRange(this.ref, this.blob.digest, start + got, end)) {
          await write(chunk);
          got += chunk.length;
        }
        return;
      } catch (err) {
        if (err instanceof RegistryError || err instanceof PaceCancelled || attempt >= 4) throw err;
        // `write` continues where the cut left off: the next attempt asks only for the rest.
        this.logger.debug({ err, piece: i, attempt }, 'a piece from the registry was cut; resuming');
        await sleep(200 * 2 ** (attempt - 1));
      }
    }
  }

  /** A piece from a peer; a peer silent for `stallMs` (before or during the answer) fails it. */
  private async fromPeer(
    peer: { node: string; url: string },
    i: number,
    write: (chunk: Uint8Array) => Promise<void>,
  ): Promise<void> {
    const { start, end } = this.pieces.range(i);
    const abort = new AbortController();
    let timer = setTimeout(() => abort.abort(), this.swarm.opts.stallMs);
    const alive = () => {
      clearTimeout(timer);
      timer = setTimeout(() => abort.abort(), this.swarm.opts.stallMs);
    };
    try {
      const res = await fetch(`${peer.url}/peer/v1/blobs/${this.blob.digest}`, {
        headers: { ...this.swarm.node.headers(), range: `bytes=${start}-${end - 1}` },
        signal: abort.signal,
      });
      if (res.status !== 206) {
        await res.body?.cancel();
        throw new Error(`answered ${res.status}`);
      }
      alive();
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        alive();
        await write(chunk);
      }
    } catch (err) {
      throw abort.signal.aborted
        ? new Error(`sent nothing for ${this.swarm.opts.stallMs} ms`, { cause: err })
        : err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** A piece that failed: from a peer, drop the peer (the piece is looked for again); from the registry, fail. */
  private pieceFailed(i: number, source: Source, err: unknown): void {
    this.t.writing.delete(i);
    this.t.events.emit('change');
    this.sources.delete(i);
    if (source.kind === 'origin' || err instanceof PaceCancelled) {
      this.failure ??= err;
      return;
    }
    if (this.dropped.has(source.node)) return; // its other pieces in flight failed with it
    this.dropped.add(source.node);
    this.holders = this.holders.filter((h) => h.node !== source.node);
    this.logger.warn(
      { digest: this.blob.digest, piece: i, peer: source.node, error: errorMessage(err) },
      'peer dropped for this blob; its pieces come from elsewhere',
    );
  }

  /** Tells the directory which pieces this node holds: one write at a time, the latest state. */
  private publish(): void {
    if (!this.swarm.node.serving) return;
    if (this.publishing) {
      this.publishAgain = true;
      return;
    }
    this.publishing = (async () => {
      do {
        this.publishAgain = false;
        await this.directory.holdBlob({
          node: this.me,
          digest: this.blob.digest,
          size: this.blob.size,
          complete: false,
          pieces: this.pieces.toBitmap(),
        });
      } while (this.publishAgain);
    })()
      .catch((err: unknown) => this.logger.warn({ err }, 'publishing the pieces this node holds failed'))
      .finally(() => (this.publishing = undefined));
  }

  private async digestOfFile(): Promise<string> {
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(this.file)) hash.update(chunk as Buffer);
    return `sha256:${hash.digest('hex')}`;
  }
}
