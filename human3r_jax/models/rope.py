"""2-D rotary position embedding of CroCo/CUT3R.

A head of width d is split in two halves: the first rotated with the row coordinate, the second
with the column coordinate. Inside a half, channel j is paired with channel j + d/4 (rotate-half
pairing) and turned by θ = p·ω_j, ω_j = base^(−j/(d/4)). θ is computed from the position itself,
not from a table, so the pose token's position −1 works as in the official CUDA kernel.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def inv_freq(head_dim: int, base: float) -> np.ndarray:
    """ω_j for j < head_dim/4, float32 as the kernel computes it."""
    q = head_dim // 4
    return (1.0 / np.power(np.float32(base), np.arange(q, dtype=np.float32) / np.float32(q))).astype(np.float32)


def _rotate_half(x: jnp.ndarray, pos: jnp.ndarray, freqs: np.ndarray) -> jnp.ndarray:
    """x [..., N, H, 2Q], pos [..., N] -> x rotated by θ = pos·ω."""
    q = freqs.shape[0]
    theta = pos.astype(jnp.float32)[..., None] * freqs  # [..., N, Q]
    cos = jnp.cos(theta)[..., None, :]
    sin = jnp.sin(theta)[..., None, :]
    u, v = x[..., :q], x[..., q:]
    return jnp.concatenate([u * cos - v * sin, v * cos + u * sin], axis=-1)


def apply_rope(x: jnp.ndarray, pos: jnp.ndarray, base: float = 100.0, fp16_round: bool = False) -> jnp.ndarray:
    """Rotate queries or keys.

    x: [B, N, H, d] (any float dtype); pos: [B, N, 2] integer (row, col).
    fp16_round: round x to float16 before and after the rotation, as the official encoder does
    (it casts q, k to half before its RoPE kernel, which rotates in float32).
    Returns x's dtype; the rotation itself runs in float32.
    """
    dtype = x.dtype
    d = x.shape[-1]
    if d % 4:
        raise ValueError(f"RoPE2D needs a head dim divisible by 4, got {d}")
    xf = x.astype(jnp.float16).astype(jnp.float32) if fp16_round else x.astype(jnp.float32)
    freqs = inv_freq(d, base)
    half = d // 2
    y = _rotate_half(xf[..., :half], pos[..., 0], freqs)
    xx = _rotate_half(xf[..., half:], pos[..., 1], freqs)
    out = jnp.concatenate([y, xx], axis=-1)
    if fp16_round:
        out = out.astype(jnp.float16)
    return out.astype(dtype)


def grid_positions(h: int, w: int) -> np.ndarray:
    """(row, col) of each token of an h×w patch grid, row-major: [h·w, 2] int32."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=-1).astype(np.int32)
