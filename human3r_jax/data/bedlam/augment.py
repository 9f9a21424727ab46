"""The image side of a view, as the official code does it: crop and resize of the image, depth [H, W],
mask and intrinsics [3, 3] together (random crop enlargement), colour jitter, and ImgNorm.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.ImageEnhance

from human3r_jax.data.bedlam.errors import DataError

# ---------------------------------------------------------------- crop and resize


def _rescale_intrinsics(K: np.ndarray, in_size, out_size, scale: float) -> np.ndarray:
    """Intrinsics after scaling an image of in_size by `scale` and cutting a centred out_size window.

    Scaling is about the pixel corner (principal point +½, scale, −½: pixel centres at integers);
    the window's offset is half the margin (may be fractional), as the official camera_matrix_of_crop."""
    offset = 0.5 * (np.asarray(in_size) * scale - np.asarray(out_size))
    K = K.copy()
    K[:2, 2] += 0.5
    K[:2, :] *= scale
    K[:2, 2] -= offset
    K[:2, 2] -= 0.5
    return K


def _crop(rgb, depth, mask, K, box):
    left, top, right, bottom = box
    K = K.copy()
    K[0, 2] -= left
    K[1, 2] -= top
    return rgb.crop(box), depth[top:bottom, left:right], mask.crop(box), K


def _resize_nearest_opencv(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenCV INTER_NEAREST (source index floor(i · in/out), no half-pixel shift), which the official
    code uses for depth; PIL's NEAREST (used for masks) samples pixel centres instead."""
    h, w = a.shape
    xs = np.minimum(np.floor(np.arange(width) * (1.0 / (width / w))).astype(np.int64), w - 1)
    ys = np.minimum(np.floor(np.arange(height) * (1.0 / (height / h))).astype(np.int64), h - 1)
    return a[ys[:, None], xs[None, :]]


def crop_resize(
    rgb: PIL.Image.Image,
    depth: np.ndarray,
    mask: PIL.Image.Image,
    K: np.ndarray,
    resolution: tuple[int, int],
    enlarge: int = 0,
    *,
    name: str = "view",
):
    """The official `_crop_resize_if_necessary` (with mask): image, depth [H, W], mask and intrinsics
    [3, 3] together → (rgb, depth, mask) at resolution (W, H) and the new intrinsics.

    1. Crop the largest window centred on the rounded principal point.
    2. Scale by s = max((resolution + enlarge) / size) + 1e-8 to floor(size · s) pixels (LANCZOS when
       shrinking, else bicubic; depth OpenCV-nearest; mask PIL-nearest); intrinsics scaled by s.
    3. Crop the centred resolution window (offset rounded half-to-even).
    """
    width, height = rgb.size
    cx, cy = (int(c) for c in np.round(K[:2, 2]))
    mx, my = min(cx, width - cx), min(cy, height - cy)
    if not (mx > width / 5 and my > height / 5):
        raise DataError(
            f"{name}: principal point ({K[0, 2]:.1f}, {K[1, 2]:.1f}) is too far from the centre "
            f"of the {width}x{height} image"
        )
    rgb, depth, mask, K = _crop(rgb, depth, mask, K, (cx - mx, cy - my, cx + mx, cy + my))

    size = np.array(rgb.size)
    scale = max((np.array(resolution) + enlarge) / size) + 1e-8
    out = np.floor(size * scale).astype(int)
    rgb = rgb.resize(tuple(out), PIL.Image.Resampling.LANCZOS if scale < 1 else PIL.Image.Resampling.BICUBIC)
    depth = _resize_nearest_opencv(depth, *out)
    mask = mask.resize(tuple(out), PIL.Image.Resampling.NEAREST)
    K = _rescale_intrinsics(K, size, out, scale)

    # The official code derives the window from the intrinsics of a centred crop; same arithmetic here
    # so that half-pixel offsets round the same way.
    K_centred = _rescale_intrinsics(K, out, resolution, 1)
    left, top = (int(v) for v in np.round(K[:2, 2] - K_centred[:2, 2]))
    return _crop(rgb, depth, mask, K, (left, top, left + resolution[0], top + resolution[1]))


# ---------------------------------------------------------------- colour


def jitter_params(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One SeqColorJitter draw: (order of the 4 ops [4], factors [brightness, contrast, saturation, hue])."""
    order = rng.permutation(4)
    factors = np.concatenate([rng.uniform(0.5, 1.5, 3), rng.uniform(-0.1, 0.1, 1)])
    return order, factors


def color_jitter(img: PIL.Image.Image, params) -> PIL.Image.Image:
    """torchvision's PIL colour ops (ImageEnhance and an 8-bit hue rotation) in the drawn order."""
    order, (brightness, contrast, saturation, hue) = params
    for op in order:
        if op == 0:
            img = PIL.ImageEnhance.Brightness(img).enhance(brightness)
        elif op == 1:
            img = PIL.ImageEnhance.Contrast(img).enhance(contrast)
        elif op == 2:
            img = PIL.ImageEnhance.Color(img).enhance(saturation)
        else:
            h, s, v = img.convert("HSV").split()
            # uint8 of the truncated shift; wrapping around 256 rotates the hue circle
            shifted = (np.asarray(h, np.int64) + int(hue * 255)) % 256
            h = PIL.Image.fromarray(shifted.astype(np.uint8), "L")
            img = PIL.Image.merge("HSV", (h, s, v)).convert("RGB")
    return img


def img_norm(img: PIL.Image.Image) -> np.ndarray:
    """uint8 RGB → float32 [H, W, 3] (x/255 − 0.5)/0.5 (torchvision ToTensor + Normalize(0.5, 0.5))."""
    x = np.asarray(img, np.float32) / np.float32(255)
    return (x - np.float32(0.5)) / np.float32(0.5)
