"""Frame loading of the official evaluation scripts (``load_images_for_eval``).

It differs from the demo's ``load_images`` (``human3r_jax.data.images.preprocess``) in one choice: after the
resize to the model's size rule, the image is made a multiple of 16 either by a centre **crop** (camera pose,
human tasks; the same pixels as ``preprocess``) or by a LANCZOS **resize** to the cropped size (video depth,
a slight anisotropic squeeze). Sizes:

- 512 (any size but 224): long side → 512 with ``int(round(x·512/S))``; then with ``cx = W//2``, ``cy = H//2``:
  ``halfw = ((2·cx)//16)·8``, ``halfh = ((2·cy)//16)·8`` (``halfh = 3·halfw/4`` for a square image); the final
  size is (2·halfw, 2·halfh).
- 224: short side → 224 (long side round(224·max(W/H, H/W))), then a centre square of side 2·min(cx, cy).

Only .jpg, .jpeg and .png files are frames (the official loader skips everything else in a listing).
Pixels are returned [H, W, 3] float32 in [−1, 1] like ``preprocess``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image

from human3r_jax.data.images import ImageError, _resize_long_side, normalize, open_image

EVAL_EXTENSIONS = (".jpg", ".jpeg", ".png")


def is_frame_file(name: str) -> bool:
    return name.lower().endswith(EVAL_EXTENSIONS)


def _geometry(w: int, h: int, size: int) -> tuple[tuple[int, int], tuple, tuple[int, int]]:
    """(resized (W, H), crop box, final (W, H)) of an image of W×H pixels."""
    long_side = round(size * max(w / h, h / w)) if size == 224 else size
    s = max(w, h)
    rw, rh = (int(round(x * long_side / s)) for x in (w, h))
    cx, cy = rw // 2, rh // 2
    if size == 224:
        half = min(cx, cy)
        box = (cx - half, cy - half, cx + half, cy + half)
        return (rw, rh), box, (2 * half, 2 * half)
    halfw, halfh = ((2 * cx) // 16) * 8, ((2 * cy) // 16) * 8
    if rw == rh:
        halfh = 3 * halfw / 4
    box = (cx - halfw, cy - halfh, cx + halfw, cy + halfh)
    # PIL's crop rounds a fractional box; the resize gets the same integer size
    final = (int(round(box[2])) - int(round(box[0])), int(round(box[3])) - int(round(box[1])))
    return (rw, rh), box, final


def eval_model_size(width: int, height: int, size: int = 512) -> tuple[int, int]:
    """(W, H) the eval loader gives for a raw W×H image (the same in crop and resize modes)."""
    return _geometry(width, height, size)[2]


def eval_crop(width: int, height: int, size: int = 512) -> tuple[float, float, int, int]:
    """(sx, sy, left, top): the eval loader's resize factors and crop offset, so that a raw pixel (u, v) lands at
    (sx·u − left, sy·v − top) in the cropped image (the exact intrinsics of the crop mode)."""
    (rw, rh), box, _ = _geometry(width, height, size)
    return rw / width, rh / height, int(round(box[0])), int(round(box[1]))


def eval_preprocess(img: PIL.Image.Image, size: int = 512, crop: bool = True) -> np.ndarray:
    """One RGB image as ``load_images_for_eval(…, size, crop)`` → [H, W, 3] float32 in [−1, 1]."""
    w1, h1 = img.size
    _, box, final = _geometry(w1, h1, size)
    if final[0] < 16 or final[1] < 16:
        raise ImageError(f"image of {w1}x{h1} pixels is too small for the model (at least 16x16 after resizing)")
    long_side = round(size * max(w1 / h1, h1 / w1)) if size == 224 else size
    img = _resize_long_side(img, long_side)
    img = img.crop(box) if crop else img.resize(final, PIL.Image.LANCZOS)
    return normalize(np.asarray(img))


def load_eval_frame(path: str | Path, size: int = 512, crop: bool = True) -> np.ndarray:
    """A frame file read (EXIF orientation applied, RGB) and preprocessed as ``eval_preprocess``."""
    return eval_preprocess(open_image(path), size, crop)


def frame_files(folder: str | Path) -> list[Path]:
    """The frames of a folder as the official launchers list them: every name, sorted, then the image
    extensions kept."""
    folder = Path(folder)
    return [folder / n for n in sorted(p.name for p in folder.iterdir()) if is_frame_file(n)]
