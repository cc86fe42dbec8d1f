import type { BlobHolding, Peer, PieceClaim } from './store.js';

/** Rows of the peer directory (peers, peer_blobs, peer_pieces), decoded alike for every store. */

/** A peer not seen for this long is forgotten, with what it held. */
export const PEER_FORGET_MS = 24 * 3600_000;

export interface PeerRow {
  node: string;
  url: string | null;
  token_hash: string;
  alive_until: number | string;
}

export const toPeer = (r: PeerRow): Peer => ({
  node: r.node,
  url: r.url,
  tokenHash: r.token_hash,
  aliveUntil: Number(r.alive_until),
});

export interface HolderRow {
  node: string;
  digest: string;
  size: number | string;
  complete: number | boolean;
  pieces: string;
  url: string;
}

export const toHolder = (r: HolderRow): BlobHolding & { url: string } => ({
  node: r.node,
  digest: r.digest,
  size: Number(r.size),
  complete: Boolean(r.complete),
  pieces: r.pieces,
  url: r.url,
});

export interface PieceRow {
  idx: number;
  node: string;
  claimed_at: number | string;
  sha256: string | null;
}

export const toPieceClaim = (r: PieceRow): PieceClaim => ({
  index: Number(r.idx),
  node: r.node,
  claimedAt: Number(r.claimed_at),
  sha256: r.sha256,
});
