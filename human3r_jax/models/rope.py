"""2-D rotary position embedding of CroCo/CUT3R.

A head of width d is split in two halves: the first rotated with the row coordinate, the second
with the column coordinate. Inside a half, channel j is paired with channel j + d/4 (rotate-half
pairing) and turned by θ = p·ω_j, ω_j = base^(−j/(d/4)), for any integer p, so the pose token's
position −1 turns backwards as in the official CUDA kernel.

cos θ and sin θ are read from float32 tables over the positions [−TABLE_HALF, TABLE_HALF) built in
numpy once per (d, base): computed inside the step, XLA:CPU fuses them into the rotation and evaluates
them again for every head and channel (3.7 → 1.2 ms for an encoder layer's q, k and v). A position
outside the table gives NaN, never a wrong angle.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

TABLE_HALF = 1024  # positions −1024 … 1023: a side of 1024 patches (16,384 px at patch 16)


def inv_freq(head_dim: int, base: float) -> np.ndarray:
    """ω_j for j < head_dim/4, float32 as the kernel computes it."""
    q = head_dim // 4
    return (1.0 / np.power(np.float32(base), np.arange(q, dtype=np.float32) / np.float32(q))).astype(np.float32)


@functools.cache
def angle_tables(head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """cos θ and sin θ for p = −TABLE_HALF … TABLE_HALF − 1 (row p + TABLE_HALF): [2·TABLE_HALF, d/4] float32.
    θ = p·ω in float32 as the kernel computes it; its cosine and sine rounded once from float64."""
    p = np.arange(-TABLE_HALF, TABLE_HALF, dtype=np.float32)[:, None]
    theta = (p * inv_freq(head_dim, base)).astype(np.float64)
    return np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)


def apply_rope(x: jnp.ndarray, pos: jnp.ndarray, base: float = 100.0, fp16_round: bool = False) -> jnp.ndarray:
    """Rotate queries or keys.

    x: [B, N, H, d] (any float dtype); pos: [B, N, 2] integer (row, col).
    fp16_round: round x to float16 before and after the rotation, as the official encoder does
    (it casts q, k to half before its RoPE kernel, which rotates in float32).
    Returns x's dtype; the rotation itself runs in float32.
    """
    dtype = x.dtype
    b, n, h, d = x.shape
    if d % 4:
        raise ValueError(f"RoPE2D needs a head dim divisible by 4, got {d}")
    q = d // 4
    cos_t, sin_t = angle_tables(d, float(base))
    row = jnp.asarray(pos, jnp.int32) + TABLE_HALF
    row = jnp.where((row >= 0) & (row < 2 * TABLE_HALF), row, 2 * TABLE_HALF)  # jnp.take wraps negatives
    cos = jnp.take(cos_t, row, axis=0, mode="fill", fill_value=np.nan)[:, :, None]  # [B, N, 1, 2, Q]
    sin = jnp.take(sin_t, row, axis=0, mode="fill", fill_value=np.nan)[:, :, None]
    xf = x.astype(jnp.float16).astype(jnp.float32) if fp16_round else x.astype(jnp.float32)
    x5 = xf.reshape(b, n, h, 2, 2, q)  # (row half, col half) × (u, v) × Q
    u, v = x5[..., 0, :], x5[..., 1, :]
    out = jnp.stack([u * cos - v * sin, v * cos + u * sin], axis=-2).reshape(b, n, h, d)
    if fp16_round:
        out = out.astype(jnp.float16)
    return out.astype(dtype)


def grid_positions(h: int, w: int) -> np.ndarray:
    """(row, col) of each token of an h×w patch grid, row-major: [h·w, 2] int32."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=-1).astype(np.int32)
