"""Tracking (spec §4.7): the fixed-size JAX version against a variable-size numpy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from human3r_jax.models.tracking import TrackState, init_tracks, log_optimal_transport, track

jtrack = jax.jit(track)


# ---------------------------------------------------------------------------------------------
# Reference: the official algorithm on variable-size arrays (float64), written from its description.


def _lse(x, axis):
    mx = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(mx, axis) + np.log(np.sum(np.exp(x - mx), axis=axis))


def ref_log_ot(scores, alpha=-10.0, iters=20):
    """[m, n] -> [m+1, n+1]: Sinkhorn with dustbins, marginals (1,…,1,n) and (1,…,1,m) over m+n,
    result shifted by +log(m+n)."""
    m, n = scores.shape
    z = np.full((m + 1, n + 1), alpha)
    z[:m, :n] = scores
    norm = -np.log(m + n)
    log_mu = np.append(np.full(m, norm), np.log(n) + norm)
    log_nu = np.append(np.full(n, norm), np.log(m) + norm)
    u, v = np.zeros(m + 1), np.zeros(n + 1)
    for _ in range(iters):
        u = log_mu - _lse(z + v[None], 1)
        v = log_nu - _lse(z + u[:, None], 0)
    return z + u[:, None] + v[None] - norm


class RefTracker:
    """Official tracking; `capacity` (None = unbounded) truncates the memory's tail like `track`."""

    def __init__(self, capacity=None):
        self.capacity = capacity
        self.tok = None  # [m, D] or None before the first frame with humans
        self.ids = None
        self.max_id = -1

    def scores(self, tokens):
        """exp of the Sinkhorn block [m, n] the matching would see for `tokens`."""
        cost = -np.linalg.norm(self.tok[:, None] - tokens[None], axis=-1)
        return np.exp(ref_log_ot(cost)[:-1, :-1])

    def step(self, tokens):
        tokens = np.asarray(tokens, np.float64)
        n = len(tokens)
        if n == 0:
            return np.zeros(0, np.int64)
        if self.tok is None:
            ids = np.arange(n)
            self.max_id = n - 1
            self.tok, self.ids = tokens, ids
        else:
            z = np.log(self.scores(tokens))
            m = len(self.tok)
            i0, i1 = z.argmax(1), z.argmax(0)
            mutual0 = i1[i0] == np.arange(m)
            mutual1 = i0[i1] == np.arange(n)
            valid0 = mutual0 & (np.where(mutual0, np.exp(z.max(1)), 0.0) > 0.2)
            valid1 = mutual1 & valid0[i1]
            ids = np.full(n, -1)
            ids[valid1] = self.ids[i1[valid1]]
            k = int((~valid1).sum())
            ids[~valid1] = np.arange(self.max_id + 1, self.max_id + 1 + k)
            self.max_id += k
            self.tok = np.concatenate([tokens, self.tok[~valid0]])
            self.ids = np.concatenate([ids, self.ids[~valid0]])
        if self.capacity is not None:
            self.tok, self.ids = self.tok[: self.capacity], self.ids[: self.capacity]
        return ids


# ---------------------------------------------------------------------------------------------
# Helpers


def pad(tokens, S, D, rng=None):
    """Variable-size frame -> (tokens [S, D] float32, valid [S]); padded slots get garbage."""
    n = len(tokens)
    out = np.zeros((S, D), np.float32)
    if rng is not None:
        out[n:] = rng.choice([np.nan, 1e30, 0.0]) if rng.random() < 0.5 else rng.normal(size=(S - n, D)) * 10
    out[:n] = tokens
    return jnp.asarray(out), jnp.asarray(np.arange(S) < n)


def check_same(state, ids, ref, ref_ids, n):
    """The JAX step agrees with the reference step: ids, memory ids, tokens, size, next id."""
    ids = np.asarray(ids)
    np.testing.assert_array_equal(ids[:n], ref_ids)
    assert np.all(ids[n:] == -1)
    m = 0 if ref.tok is None else len(ref.tok)
    valid = np.asarray(state.valid)
    assert valid[:m].all() and not valid[m:].any()
    mem_ids = np.asarray(state.ids)
    assert np.all(mem_ids[m:] == -1)
    if m:
        np.testing.assert_array_equal(mem_ids[:m], ref.ids)
        np.testing.assert_allclose(np.asarray(state.tokens)[:m], ref.tok, rtol=0, atol=1e-6)
    assert int(state.next_id) == ref.max_id + 1


def random_frames(rng, n_frames, S, D, population=10):
    """Frames of a drifting population: random counts (0..S), order, noise level (from clear
    matches to ambiguous ones) and occasional strangers."""
    base = rng.normal(size=(population, D)) * 10
    frames = []
    for _ in range(n_frames):
        n = 0 if rng.random() < 0.15 else int(rng.integers(1, S + 1))
        who = rng.choice(population, size=n, replace=False)
        sigma = rng.choice([0.05, 0.5, 2.0, 3.0, 4.0])
        tok = base[who] + sigma * rng.normal(size=(n, D))
        base[who] = tok
        if n and rng.random() < 0.2:
            tok[rng.integers(n)] = rng.normal(size=D) * 10
        frames.append(tok.astype(np.float32))
    return frames


# ---------------------------------------------------------------------------------------------
# Tests


def test_init_tracks():
    st = init_tracks(7, 5)
    assert st.tokens.shape == (7, 5) and st.tokens.dtype == jnp.float32
    assert st.ids.dtype == jnp.int32 and np.all(np.asarray(st.ids) == -1)
    assert not np.asarray(st.valid).any()
    assert st.next_id.shape == () and st.next_id.dtype == jnp.int32 and int(st.next_id) == 0


@pytest.mark.parametrize("m,n", [(1, 1), (3, 1), (1, 4), (5, 3), (4, 6)])
def test_masked_sinkhorn_matches_reference(m, n):
    M, N = 8, 6
    rng = np.random.default_rng(m * 10 + n)
    scores = rng.normal(size=(M, N)).astype(np.float32) * 5
    rows = np.zeros(M, bool)
    rows[rng.choice(M, m, replace=False)] = True
    cols = np.zeros(N, bool)
    cols[rng.choice(N, n, replace=False)] = True
    scores[~rows] = np.nan  # masked entries must not leak into the valid ones
    scores[:, ~cols] = np.inf
    out = jax.jit(log_optimal_transport)(jnp.asarray(scores), jnp.asarray(rows), jnp.asarray(cols))
    out = np.asarray(out)
    want = ref_log_ot(scores[rows][:, cols].astype(np.float64))
    r = np.append(rows, True)
    c = np.append(cols, True)
    np.testing.assert_allclose(out[np.ix_(r, c)], want, rtol=1e-5, atol=1e-5)
    assert np.all(out[~r] == -np.inf) and np.all(out[:, ~c] == -np.inf)


def test_masked_sinkhorn_empty_side_is_finite():
    """m = 0 or n = 0 never reaches the official Sinkhorn; ours must still produce no NaN."""
    scores = jnp.ones((4, 3))
    for rows, cols in [(np.zeros(4, bool), np.ones(3, bool)), (np.ones(4, bool), np.zeros(3, bool))]:
        out = np.asarray(log_optimal_transport(scores, jnp.asarray(rows), jnp.asarray(cols)))
        assert not np.isnan(out).any()


@pytest.mark.parametrize("capacity", [96, 5])
def test_random_sequences_match_reference(capacity):
    """Random sequences; capacity 96 never overflows (the official algorithm exactly), capacity 5
    exercises the documented tail truncation (and frames with more humans than the capacity)."""
    S, D = 6, 8
    cover = {"empty": 0, "more_humans": 0, "reid_after_gap": 0, "near_above": 0, "near_below": 0, "overflow": 0}
    for seed in range(6):
        rng = np.random.default_rng(seed)
        ref = RefTracker(None if capacity == 96 else capacity)
        state = init_tracks(capacity, D)
        last_seen = {}
        for f, frame in enumerate(random_frames(rng, 30, S, D)):
            n = len(frame)
            m = 0 if ref.tok is None else len(ref.tok)
            cover["empty"] += n == 0
            cover["more_humans"] += 0 < m < n
            if m and n:
                s = ref.scores(frame.astype(np.float64))
                cover["near_above"] += int(np.sum((s > 0.2) & (s < 0.3)))
                cover["near_below"] += int(np.sum((s > 0.1) & (s <= 0.2)))
            ref_ids = ref.step(frame)
            state, ids = jtrack(state, *pad(frame, S, D, rng))
            check_same(state, ids, ref, ref_ids, n)
            for i in ref_ids:
                cover["reid_after_gap"] += f - last_seen.get(i, f) >= 3
                last_seen[i] = f
            cover["overflow"] += ref.max_id + 1 > capacity
    assert capacity == 5 or cover["overflow"] == 0  # 96: the official algorithm, untruncated
    del cover["overflow"]
    assert all(v > 0 for v in cover.values()), cover


def test_near_threshold_both_sides():
    """Each frame moves one remembered person so that its match score lands just above or just
    below 0.2 (found by bisection on the reference); ids and memory must agree on both sides."""
    S, D = 6, 8
    rng = np.random.default_rng(123)
    ref = RefTracker()
    state = init_tracks(64, D)
    first = (rng.normal(size=(4, D)) * 10).astype(np.float32)
    state, ids = jtrack(state, *pad(first, S, D))
    check_same(state, ids, ref, ref.step(first), 4)
    sides = []
    for f in range(12):
        rows = rng.choice(len(ref.tok), size=min(4, len(ref.tok)), replace=False)
        others = ref.tok[rows[1:]] + 0.05 * rng.normal(size=(len(rows) - 1, D))
        direction = rng.normal(size=D)
        direction /= np.linalg.norm(direction)

        def frame_at(t, rows=rows, direction=direction, others=others):
            return np.concatenate([ref.tok[rows[:1]] + t * direction, others]).astype(np.float32)

        def score(t, rows=rows):
            return ref.scores(frame_at(t).astype(np.float64))[rows[0], 0]

        lo, hi = 0.0, 60.0
        assert score(lo) > 0.2 > score(hi)
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if score(mid) > 0.2 else (lo, mid)
        above = f % 2 == 0
        t = lo * 0.997 if above else hi * 1.003
        s = score(t)
        assert (0.2 < s < 0.21) if above else (0.19 < s <= 0.2), s
        frame = frame_at(t)
        expected_id = ref.ids[rows[0]]
        ref_ids = ref.step(frame)
        assert (ref_ids[0] == expected_id) == above  # the threshold decides, not the mutual test
        state, ids = jtrack(state, *pad(frame, S, D))
        check_same(state, ids, ref, ref_ids, len(frame))
        sides.append(above)
    assert any(sides) and not all(sides)


def test_scenario_swap_absence_new_person():
    D = 4
    S = 4
    A, B, C = (np.full(D, v, np.float32) for v in (0.0, 20.0, -20.0))
    st = init_tracks(8, D)

    def step(st, *people):
        frame = np.stack(people) if people else np.zeros((0, D), np.float32)
        st, ids = jtrack(st, *pad(frame, S, D))
        return st, np.asarray(ids).tolist()

    st, ids = step(st, A, B)
    assert ids == [0, 1, -1, -1]
    st, ids = step(st, B + 0.1, A - 0.1)  # slot order swapped
    assert ids == [1, 0, -1, -1]
    st, ids = step(st, A)  # B absent: appended after the current humans
    assert ids == [0, -1, -1, -1]
    assert np.asarray(st.ids).tolist()[:2] == [0, 1]
    before = st
    st, ids = step(st)  # nobody: memory unchanged
    assert ids == [-1] * 4
    for a, b in zip(jax.tree.leaves(st), jax.tree.leaves(before)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    st, ids = step(st, B - 0.2, A)  # B back after 2 frames
    assert ids == [1, 0, -1, -1]
    st, ids = step(st, C, A, B)  # a stranger gets the next id
    assert ids == [2, 0, 1, -1]
    assert np.asarray(st.ids).tolist() == [2, 0, 1, -1, -1, -1, -1, -1]
    assert int(st.next_id) == 3


def test_track_losing_the_mutual_test_is_kept():
    """A track whose best human prefers another track is not matched, even with a score above
    0.2, so it stays in the memory (behind the current humans)."""
    D, S = 4, 2
    e = np.full(D, 0.5, np.float32)  # unit vector
    st = init_tracks(8, D)
    st, ids = jtrack(st, *pad(np.zeros((1, D), np.float32), S, D))
    assert np.asarray(ids).tolist() == [0, -1]
    st, ids = jtrack(st, *pad(14 * e[None], S, D))  # too far (score 0.12): a second id
    assert np.asarray(ids).tolist() == [1, -1]
    assert np.asarray(st.ids).tolist()[:2] == [1, 0]
    between = 6.3 * e[None]  # nearer to id 0; id 1's best human too, with score 0.31
    ref = RefTracker()
    for frame in (np.zeros((1, D)), 14 * e[None]):
        ref.step(frame)
    np.testing.assert_allclose(ref.scores(between.astype(np.float64))[:, 0], [0.31, 0.65], atol=0.01)
    st, ids = jtrack(st, *pad(between, S, D))
    assert np.asarray(ids).tolist() == [0, -1]
    assert np.asarray(st.ids).tolist()[:3] == [0, 1, -1]
    assert int(st.next_id) == 2


def test_padding_position_and_content_do_not_matter():
    """Invalid slots anywhere, holding NaN, give the same ids as a compact frame."""
    S, D = 6, 8
    rng = np.random.default_rng(7)
    frames = random_frames(rng, 12, 4, D)
    st_a = st_b = init_tracks(16, D)
    for frame in frames:
        n = len(frame)
        tok_a, valid_a = pad(frame, S, D)
        slots = np.sort(rng.choice(S, n, replace=False))
        tok_b = np.full((S, D), np.nan, np.float32)
        tok_b[slots] = frame
        valid_b = np.zeros(S, bool)
        valid_b[slots] = True
        st_a, ids_a = jtrack(st_a, tok_a, valid_a)
        st_b, ids_b = jtrack(st_b, jnp.asarray(tok_b), jnp.asarray(valid_b))
        np.testing.assert_array_equal(np.asarray(ids_b)[slots], np.asarray(ids_a)[:n])
        assert np.all(np.asarray(ids_b)[~valid_b] == -1)
        for a, b in zip(jax.tree.leaves(st_a), jax.tree.leaves(st_b)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(st_a.next_id) > 0


def test_vmap_over_batch():
    S, D, T, B = 5, 8, 32, 3
    seqs = [random_frames(np.random.default_rng(100 + b), 10, S, D) for b in range(B)]
    vtrack = jax.jit(jax.vmap(track))
    batched = jax.tree.map(lambda x: jnp.stack([x] * B), init_tracks(T, D))
    singles = [init_tracks(T, D)] * B
    for f in range(10):
        padded = [pad(seqs[b][f], S, D) for b in range(B)]
        batched, ids = vtrack(batched, jnp.stack([p[0] for p in padded]), jnp.stack([p[1] for p in padded]))
        for b in range(B):
            singles[b], ids_b = jtrack(singles[b], *padded[b])
            np.testing.assert_array_equal(np.asarray(ids[b]), np.asarray(ids_b))
            for x, y in zip(jax.tree.leaves(batched), jax.tree.leaves(singles[b])):
                np.testing.assert_array_equal(np.asarray(x[b]), np.asarray(y))
    assert isinstance(batched, TrackState) and batched.ids.shape == (B, T)
