"""The human-prior encoder's letter-box: the [-1, 1] image resized into a square of side `img_res` and
padded (`pad_image`, PyTorch's bilinear `interpolate` semantics), its inverses for the outputs (`unpad_uv`,
`unpad_image`) and the pseudo intrinsics of that square (`prior_intrinsics`). Part of the model: the step
applies them under jit.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np


def _linear_taps(n_in: int, n_out: int):
    """PyTorch bilinear (align_corners=False, no antialias) source indices and weights, float32.

    The source coordinate scale·(i + ½) − ½ is rounded to float32 once, as PyTorch's CPU kernel
    computes it with a fused multiply-add (two roundings move λ by up to 2e-5 on 896-wide images).
    """
    scale = np.float32(n_in / n_out)
    src = (np.float64(scale) * (np.arange(n_out) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0))
    i0 = np.floor(src).astype(np.int32)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    lam = (src - i0).astype(np.float32)
    return i0, i1, lam


def resize_bilinear(x, height: int, width: int):
    """[B, H, W, C] → [B, height, width, C], PyTorch `interpolate(mode='bilinear', align_corners=False)`."""
    _, h, w, _ = x.shape
    i0, i1, lam = _linear_taps(w, width)
    lam = jnp.asarray(lam)[:, None]
    x = x[:, :, i0] * (1 - lam) + x[:, :, i1] * lam
    i0, i1, lam = _linear_taps(h, height)
    lam = jnp.asarray(lam)[:, None, None]
    return x[:, i0] * (1 - lam) + x[:, i1] * lam


def pad_geometry(height: int, width: int, target: int) -> tuple[int, int, int, int]:
    """(new_h, new_w, pad_top, pad_left) of `pad_image` for an H×W image and a target square side."""
    s = min(target / height, target / width)
    nh, nw = int(height * s), int(width * s)
    return nh, nw, (target - nh) // 2, (target - nw) // 2


def pad_image(img, target: int, value: float = -1.0):
    """Letter-box [B, H, W, C] into a target×target square: bilinear resize by min(T/H, T/W), then
    centred constant padding (the top/left get the floor half)."""
    _, h, w, _ = img.shape
    nh, nw, top, left = pad_geometry(h, w, target)
    x = resize_bilinear(img, nh, nw)
    return jnp.pad(x, ((0, 0), (top, target - nh - top), (left, target - nw - left), (0, 0)), constant_values=value)


def unpad_uv(uv, padded: int, height: int, width: int):
    """Pixel coordinates (u, v) in the padded square → the H×W image, clamped to the image."""
    m = max(height, width)
    off = jnp.asarray([(m - width) // 2, (m - height) // 2], jnp.float32)
    out = uv * (m / padded) - off
    return jnp.stack([jnp.clip(out[..., 0], 0, width - 1), jnp.clip(out[..., 1], 0, height - 1)], axis=-1)


def unpad_image(x, height: int, width: int):
    """A map over the padded square [B, S, S, C] → [B, H, W, C]: nearest resize to max(H, W), centre crop."""
    _, s, _, _ = x.shape
    m = max(height, width)
    scale = np.float32(s / m)
    idx = np.minimum(np.floor(np.arange(m, dtype=np.float32) * scale).astype(np.int32), s - 1)
    x = x[:, idx][:, :, idx]
    top, left = (m - height) // 2, (m - width) // 2
    return x[:, top : top + height, left : left + width]


def prior_intrinsics(res: int) -> np.ndarray:
    """Pseudo intrinsics of the padded square for a 60° field of view (`get_camera_parameters`)."""
    f = res / (2 * math.tan(math.radians(60) / 2))
    return np.array([[f, 0, res // 2], [0, f, res // 2], [0, 0, 1]], np.float32)
