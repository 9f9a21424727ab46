"""Resizing DINOv2's position table for Human3R's prior-encoder resolution, once, at conversion time.

The checkpoint stores a 1 + 37×37 table (trained at 518 px); DINOv2 resizes it at every call with PyTorch's
`F.interpolate(mode='bicubic', align_corners=False, antialias=False)`. Our parameter tree stores the table
already resized for the model's `img_res`, computed here in numpy with PyTorch's CPU float32 arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_CUBIC_A = np.float32(-0.75)


def _fma(a, b, c) -> np.ndarray:
    """float32 fused multiply-add a·b + c (one rounding), emulated in float64 (a·b is exact there)."""
    a, b, c = (np.asarray(v, np.float32).astype(np.float64) for v in (a, b, c))
    return (a * b + c).astype(np.float32)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """The 4 Keys cubic-convolution weights (A = -0.75) for fractional offsets t [n] → [n, 4], float32.

    near(x) = ((A+2)x − (A+3))x² + 1 for |x| ≤ 1, far(x) = ((Ax − 5A)x + 8A)x − 4A for 1 < |x| < 2,
    with the FMA contractions of PyTorch's x86-64 CPU build (checked bit for bit against torch 2.13,
    AVX2 kernels); `far` near x = 2 cancels heavily, so unfused evaluation differs by up to ~5e-7.
    """
    a = _CUBIC_A
    f32 = np.float32

    def near(x):
        return (_fma(a + f32(2), x, -(a + f32(3))) * x) * x + f32(1)

    def far(x):
        return _fma(_fma(a, x, -(f32(5) * a)), x, f32(8) * a) * x - f32(4) * a

    s = f32(1) - t
    return np.stack([far(t + f32(1)), near(t), near(s), far(s + f32(1))], axis=-1).astype(np.float32)


def _axis_taps(in_size: int, out_size: int, scale_factor: float | None):
    """Source indices [out, 4] (border-clamped) and weights [out, 4] along one axis.

    With a scale factor s, PyTorch maps output i to the source coordinate (1/s)·(i + 0.5) − 0.5 with
    the *given* s (1/s computed in double, rounded to float32), not with in/out; without one it uses
    in/out (float32 division). Coordinates and weights are float32 as in PyTorch's CPU kernel.
    """
    f32 = np.float32
    step = f32(1.0 / scale_factor) if scale_factor is not None and scale_factor > 0 else f32(in_size) / f32(out_size)
    dst = np.arange(out_size, dtype=f32) + f32(0.5)
    src = _fma(step, dst, f32(-0.5))
    idx = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    t = np.clip(src - idx.astype(f32), f32(0), f32(1)).astype(f32)
    taps = np.clip(idx[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)
    return taps, _cubic_weights(t)


def _combine4(vals, weights) -> np.ndarray:
    """v0·w0 + v1·w1 + v2·w2 + v3·w3 as PyTorch's CPU kernel contracts it:
    fma(v3, w3, fma(v2, w2, fma(v0, w0, v1·w1)))."""
    acc = _fma(vals[0], weights[0], vals[1] * weights[1])
    return _fma(vals[3], weights[3], _fma(vals[2], weights[2], acc))


def bicubic_resize(
    img: np.ndarray, out_hw: tuple[int, int], scale_factor: tuple[float, float] | None = None
) -> np.ndarray:
    """[H, W, C] float32 → [out_h, out_w, C] with PyTorch's bicubic (align_corners=False, no antialias).

    Not separable in evaluation order: each output is Σ_j wy_j · (Σ_k wx_k · x[y_j, x_k]) (rows outer),
    in float32 with PyTorch's FMA contractions, so it reproduces `F.interpolate` on x86-64 CPU bit for
    bit (other builds differ by float32 rounding only).
    """
    img = np.asarray(img, np.float32)
    h, w, _ = img.shape
    sy, sx = (None, None) if scale_factor is None else scale_factor
    ty, wy = _axis_taps(h, out_hw[0], sy)
    tx, wx = _axis_taps(w, out_hw[1], sx)
    rows = []
    for j in range(4):
        r = img[ty[:, j]]  # [oh, W, C]
        rows.append(_combine4([r[:, tx[:, k]] for k in range(4)], [wx[None, :, k, None] for k in range(4)]))
    return _combine4(rows, [wy[:, j, None, None] for j in range(4)]).astype(np.float32)


def resize_pos_embed(
    pos_embed: np.ndarray, grid: int | Sequence[int], interpolate_offset: float | None = 0.1
) -> np.ndarray:
    """DINOv2's `interpolate_pos_encoding`: [1, 1 + M², D] → [1, 1 + gh·gw, D] (CLS row kept first).

    The M×M patch table is resized bicubically with `scale_factor = ((gh + offset)/M, (gw + offset)/M)`
    (PyTorch output size floor(M·s) = g; the offset keeps that floor from landing on g − 1); with
    offset 0/None, with `size=(gh, gw)` instead. A grid equal to the stored one returns the table
    unchanged (DINOv2 skips the resize then; with the offset a resize would not be the identity).
    """
    pos_embed = np.asarray(pos_embed, np.float32)
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must be [1, 1+M*M, D], got {pos_embed.shape}")
    n = pos_embed.shape[1] - 1
    m = math.isqrt(n)
    if m * m != n:
        raise ValueError(f"pos_embed has {n} patch rows, not a square number")
    gh, gw = (grid, grid) if isinstance(grid, (int, np.integer)) else tuple(int(g) for g in grid)
    if gh == m and gw == m:
        return pos_embed.copy()
    d = pos_embed.shape[2]
    cls, table = pos_embed[:, :1], pos_embed[0, 1:].reshape(m, m, d)
    if interpolate_offset:
        scale = (float(gh + interpolate_offset) / m, float(gw + interpolate_offset) / m)
        size = (math.floor(m * scale[0]), math.floor(m * scale[1]))  # PyTorch's rule (in double)
        if size != (gh, gw):
            raise ValueError(f"bicubic resize with scale {scale} gives {size}, not {(gh, gw)}")
    else:
        scale, size = None, (gh, gw)
    out = bicubic_resize(table, size, scale).reshape(1, gh * gw, d)
    return np.concatenate([cls, out], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
