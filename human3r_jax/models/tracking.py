"""Online multi-person tracking as a pure, jit-able function on fixed-size buffers.

Each frame's human tokens (decoder outputs, one per detected human) are matched to a track memory
with SuperGlue-style log-space Sinkhorn (dustbin score −10, 20 iterations), a mutual-argmax test
and a 0.2 threshold on the rescaled assignment. Matched humans inherit the track's id, unmatched
ones get fresh ids (in slot order). The memory becomes [current humans, unmatched old tracks in
their previous order], so it is always ordered from most to least recently seen; a frame without
humans leaves it unchanged.

Static shapes: a frame has S human slots with a validity mask, the memory has capacity T. The
official memory grows without bound; here, when it would exceed T, the tail (the tracks seen least
recently) is dropped, and if a frame has more than T humans only its first T are remembered.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

DUSTBIN_SCORE = -10.0
SINKHORN_ITERS = 20
MATCH_THRESHOLD = 0.2


class TrackState(NamedTuple):
    """Track memory. Valid entries come first, most recently seen first."""

    tokens: jax.Array  # [T, D] last token seen for each track (zeros where empty)
    ids: jax.Array  # [T] int32, −1 where empty
    valid: jax.Array  # [T] bool
    next_id: jax.Array  # [] int32, the id the next new person gets


def init_tracks(capacity: int, dim: int, dtype=jnp.float32) -> TrackState:
    """An empty memory of `capacity` tracks of width `dim`."""
    return TrackState(
        tokens=jnp.zeros((capacity, dim), dtype),
        ids=jnp.full((capacity,), -1, jnp.int32),
        valid=jnp.zeros((capacity,), bool),
        next_id=jnp.zeros((), jnp.int32),
    )


def log_optimal_transport(scores, row_valid, col_valid, alpha=DUSTBIN_SCORE, iters=SINKHORN_ITERS):
    """Masked log-space Sinkhorn with a dustbin row and column.

    scores [M, N], row_valid [M], col_valid [N] -> [M+1, N+1] log(assignment · (m+n)), dustbins
    last, m and n the numbers of valid rows and columns. The valid entries equal the unmasked
    algorithm run on the (m+1)×(n+1) matrix of valid rows/columns; masked entries are −inf.
    """
    M, N = scores.shape
    dt = scores.dtype
    rows = jnp.append(row_valid, True)
    cols = jnp.append(col_valid, True)
    # Clamped counts keep everything finite when a side is empty (m = 0 or n = 0); the caller
    # discards those results, and the official code never runs Sinkhorn on them.
    m = jnp.maximum(jnp.sum(row_valid).astype(dt), 1)
    n = jnp.maximum(jnp.sum(col_valid).astype(dt), 1)
    norm = -jnp.log(m + n)
    z = jnp.full((M + 1, N + 1), alpha, dt).at[:M, :N].set(scores)
    # −inf makes masked entries drop out of every logsumexp exactly (exp(−inf) = 0).
    z = jnp.where(rows[:, None] & cols[None, :], z, -jnp.inf)
    log_mu = jnp.append(jnp.broadcast_to(norm, (M,)), jnp.log(n) + norm)
    log_nu = jnp.append(jnp.broadcast_to(norm, (N,)), jnp.log(m) + norm)

    def step(_, uv):
        u, v = uv
        # Masked rows/columns have an all −inf logsumexp (u = +inf); pinning them to 0 avoids
        # −inf + inf = NaN and leaves their −inf entries out of the other marginal.
        u = jnp.where(rows, log_mu - jax.nn.logsumexp(z + v[None, :], axis=1), 0.0)
        v = jnp.where(cols, log_nu - jax.nn.logsumexp(z + u[:, None], axis=0), 0.0)
        return u, v

    u, v = jax.lax.fori_loop(0, iters, step, (jnp.zeros(M + 1, dt), jnp.zeros(N + 1, dt)))
    return z + u[:, None] + v[None, :] - norm


def track(state: TrackState, tokens, valid):
    """One tracking step.

    state: memory of capacity T; tokens [S, D] current human tokens (cast to the memory's dtype;
    invalid slots may hold anything, even NaN); valid [S] bool.
    Returns (new state, ids [S] int32 with −1 for invalid slots).
    """
    T = state.ids.shape[0]
    S = tokens.shape[0]
    tokens = tokens.astype(state.tokens.dtype)
    diff = state.tokens[:, None, :] - tokens[None, :, :]
    cost = -jnp.sqrt(jnp.sum(diff * diff, axis=-1))  # −cdist, [T, S]
    # Entries of padded slots (possibly NaN) are replaced by −inf inside the Sinkhorn.
    z = log_optimal_transport(cost, state.valid, valid)[:T, :S]

    # Mutual argmax over the non-dustbin block; masked entries are −inf so they never win, and
    # argmax keeps the first maximum, like torch.max over the compacted block.
    best_cur = jnp.argmax(z, axis=1)  # [T] best current human of each track
    best_trk = jnp.argmax(z, axis=0)  # [S] best track of each current human
    mutual_trk = state.valid & (best_trk[best_cur] == jnp.arange(T))
    mutual_cur = valid & (best_cur[best_trk] == jnp.arange(S))
    matched_trk = mutual_trk & (jnp.exp(jnp.max(z, axis=1)) > MATCH_THRESHOLD)
    matched_cur = mutual_cur & matched_trk[best_trk]

    new = valid & ~matched_cur
    new_rank = (jnp.cumsum(new) - 1).astype(jnp.int32)
    ids = jnp.where(matched_cur, state.ids[best_trk], jnp.where(new, state.next_id + new_rank, -1))
    num_new = jnp.sum(new).astype(jnp.int32)

    # Memory = [current humans, unmatched old tracks in previous order]; destinations ≥ T are
    # dropped by the scatter, which is the overflow policy.
    n = jnp.sum(valid).astype(jnp.int32)
    keep = state.valid & ~matched_trk
    cur_dest = jnp.where(valid, jnp.cumsum(valid) - 1, T)
    old_dest = jnp.where(keep, n + jnp.cumsum(keep) - 1, T)
    dest = jnp.concatenate([cur_dest, old_dest]).astype(jnp.int32)
    src_tokens = jnp.concatenate([tokens, state.tokens])
    src_ids = jnp.concatenate([ids, state.ids])
    size = jnp.minimum(n + jnp.sum(keep).astype(jnp.int32), T)
    updated = TrackState(
        tokens=jnp.zeros_like(state.tokens).at[dest].set(src_tokens, mode="drop"),
        ids=jnp.full((T,), -1, jnp.int32).at[dest].set(src_ids, mode="drop"),
        valid=jnp.arange(T) < size,
        next_id=state.next_id + num_new,
    )
    # A frame without humans leaves the memory untouched, as in the official code.
    out = jax.tree.map(lambda a, b: jnp.where(n > 0, a, b), updated, state)
    return out, ids
