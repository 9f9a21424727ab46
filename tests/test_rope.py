"""2-D RoPE against its formula, written out channel by channel."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from human3r_jax.models.rope import TABLE_HALF, apply_rope, grid_positions


def rope_formula(x: np.ndarray, pos: np.ndarray, base: float) -> np.ndarray:
    """x [N, H, d], pos [N, 2]: first half by row, second by column; channel j pairs with j + d/4."""
    n, _h, d = x.shape
    q = d // 4
    out = np.empty_like(x, dtype=np.float64)
    for t in range(n):
        for half, p in ((0, pos[t, 0]), (1, pos[t, 1])):
            off = half * d // 2
            for j in range(q):
                theta = p * base ** (-j / q)
                u, v = x[t, :, off + j], x[t, :, off + j + q]
                out[t, :, off + j] = u * math.cos(theta) - v * math.sin(theta)
                out[t, :, off + j + q] = v * math.cos(theta) + u * math.sin(theta)
    return out


@pytest.mark.parametrize("head_dim", [8, 48, 64])
def test_rope_matches_formula_for_negative_and_positive_positions(head_dim):
    rng = np.random.default_rng(0)
    pos = np.array([[-1, -1], [0, 0], [3, 7], [-5, 2], [27, 27], [100, -40]], np.int32)
    x = rng.normal(size=(len(pos), 2, head_dim)).astype(np.float32)
    ours = np.asarray(apply_rope(jnp.asarray(x)[None], jnp.asarray(pos)[None], 100.0))[0]
    np.testing.assert_allclose(ours, rope_formula(x, pos, 100.0), rtol=2e-5, atol=2e-5)


def test_rope_position_minus_one_turns_backwards():
    # θ = −ω (croco's cached table would read its last row for −1): rotating by −1 then by +1 gives back the input.
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 1, 1, 16)), jnp.float32)
    back = apply_rope(apply_rope(x, jnp.array([[[-1, -1]]]), 100.0), jnp.array([[[1, 1]]]), 100.0)
    np.testing.assert_allclose(np.asarray(back), np.asarray(x), atol=1e-6)
    assert not np.allclose(np.asarray(apply_rope(x, jnp.array([[[-1, -1]]]), 100.0)), np.asarray(x))


def test_rope_table_edges_and_positions_beyond_them():
    x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 4, 2, 16)), jnp.float32)
    edges = np.array([[-TABLE_HALF, 0], [TABLE_HALF - 1, 5], [0, -TABLE_HALF], [3, TABLE_HALF - 1]], np.int32)
    ours = np.asarray(apply_rope(x, jnp.asarray(edges)[None], 100.0))[0]
    np.testing.assert_allclose(ours, rope_formula(np.asarray(x)[0], edges, 100.0), rtol=2e-5, atol=2e-5)
    beyond = np.array([[TABLE_HALF, 0], [0, -TABLE_HALF - 1], [1, 1], [2, 2]], np.int32)
    out = np.asarray(apply_rope(x, jnp.asarray(beyond)[None], 100.0))[0]
    assert np.isnan(out[0, :, :8]).all() and np.isnan(out[1, :, 8:]).all()  # the half whose angle is unknown
    assert np.isfinite(out[0, :, 8:]).all() and np.isfinite(out[2:]).all()


def test_rope_fp16_rounding_option():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 5, 2, 16)), jnp.float32)
    pos = jnp.asarray(grid_positions(1, 5))[None]
    exact = apply_rope(x, pos, 100.0)
    rounded = apply_rope(x, pos, 100.0, fp16_round=True)
    assert rounded.dtype == jnp.float32
    # the result carries float16 precision: representable in float16 and within its rounding error
    np.testing.assert_array_equal(np.asarray(rounded), np.asarray(rounded.astype(jnp.float16).astype(jnp.float32)))
    np.testing.assert_allclose(np.asarray(rounded), np.asarray(exact), rtol=2e-3, atol=2e-3)
    assert not np.array_equal(np.asarray(rounded), np.asarray(exact))


def test_rope_rejects_head_dim_not_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        apply_rope(jnp.zeros((1, 1, 1, 6)), jnp.zeros((1, 1, 2), jnp.int32))


def test_grid_positions_row_major():
    np.testing.assert_array_equal(grid_positions(2, 3), [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]])
