"""The official image preprocessing: `load_images` at sizes 512 and 224 (files → model input). The
letter-boxing the model itself does (`pad_image` and its inverses) lives in `models/letterbox.py`.

Resizing uses PIL exactly as the original does (LANCZOS when shrinking, BICUBIC when enlarging), so
the resized pixels are bit-identical; images are returned NHWC float32 in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps

from human3r_jax.errors import Human3rError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class ImageError(Human3rError):
    pass


def open_image(path: str | Path) -> PIL.Image.Image:
    """Open an image file, apply its EXIF orientation and convert to RGB.

    16-bit greyscale (PIL modes I;16 and I) keeps its high byte, the image an 8-bit conversion
    gives: PIL's own RGB conversion, which the official loader applies, would clip every value above
    255 and turn the whole frame white.
    """
    try:
        with PIL.Image.open(path) as im:
            im.load()
            im = PIL.ImageOps.exif_transpose(im)
            if im.mode.startswith("I"):
                high = np.clip(np.asarray(im, np.int64), 0, 65535) >> 8
                im = PIL.Image.fromarray(high.astype(np.uint8), "L")
            return im.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (PIL.UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot read the image ({e})") from None


def _resize_long_side(img: PIL.Image.Image, long_side: int) -> PIL.Image.Image:
    s = max(img.size)
    interp = PIL.Image.LANCZOS if s > long_side else PIL.Image.BICUBIC
    return img.resize(tuple(int(round(x * long_side / s)) for x in img.size), interp)


def model_crop(width: int, height: int, size: int) -> tuple[tuple[float, float], tuple[int, int], tuple[int, int]]:
    """Where `preprocess` takes the model input from a raw image of this size (no pixels touched):
    ((sx, sy) the resize factors, (x0, y0) the crop's top-left corner in the resized image, (W, H)
    the model input size). A raw pixel centre u maps to (u + 0.5)·sx − 0.5 − x0 (PIL's resize)."""
    long_side = round(size * max(width / height, height / width)) if size == 224 else size
    w, h = (int(round(x * long_side / max(width, height))) for x in (width, height))
    cx, cy = w // 2, h // 2
    if size == 224:
        halfw = halfh = min(cx, cy)
    else:
        halfw, halfh = ((2 * cx) // 16) * 8, ((2 * cy) // 16) * 8
        if w == h:
            halfh = 3 * halfw / 4
    x0, y0 = int(round(cx - halfw)), int(round(cy - halfh))
    size_wh = (int(round(cx + halfw)) - x0, int(round(cy + halfh)) - y0)
    return (w / width, h / height), (x0, y0), size_wh


def model_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(W, H) that `preprocess` gives for a raw image of this size (no pixels touched)."""
    return model_crop(width, height, size)[2]


def intrinsics_to_model(k: np.ndarray, width: int, height: int, size: int) -> np.ndarray:
    """Pinhole K [..., 3, 3] of the raw frames (pixels, width × height) → K of the model input."""
    (sx, sy), (x0, y0), _ = model_crop(width, height, size)
    k = np.array(k, np.float64, copy=True)
    k[..., 0, :] *= sx
    k[..., 1, :] *= sy
    k[..., 0, 2] += 0.5 * sx - 0.5 - x0
    k[..., 1, 2] += 0.5 * sy - 0.5 - y0
    return k


def intrinsics_to_input(k: np.ndarray, width: int, height: int, size: int) -> np.ndarray:
    """The inverse of `intrinsics_to_model`: K of the model input → K of the raw frames."""
    (sx, sy), (x0, y0), _ = model_crop(width, height, size)
    k = np.array(k, np.float64, copy=True)
    k[..., 0, 2] -= 0.5 * sx - 0.5 - x0
    k[..., 1, 2] -= 0.5 * sy - 0.5 - y0
    k[..., 0, :] /= sx
    k[..., 1, :] /= sy
    return k


def preprocess(img: PIL.Image.Image, size: int = 512, square_crop: bool | None = None) -> np.ndarray:
    """`load_images` for one RGB image → [H, W, 3] float32 in [-1, 1].

    size 512 (or any other): long side → size, centre crop to multiples of 16, a square cut to 4:3.
    size 224 (or square_crop=True): short side → size, centre square crop.
    """
    square = (size == 224) if square_crop is None else square_crop
    w1, h1 = img.size
    if square:
        img = _resize_long_side(img, round(size * max(w1 / h1, h1 / w1)))
        w, h = img.size
        cx, cy = w // 2, h // 2
        half = min(cx, cy)
        img = img.crop((cx - half, cy - half, cx + half, cy + half))
    else:
        img = _resize_long_side(img, size)
        w, h = img.size
        cx, cy = w // 2, h // 2
        halfw, halfh = ((2 * cx) // 16) * 8, ((2 * cy) // 16) * 8
        if w == h:
            halfh = 3 * halfw / 4
        img = img.crop((cx - halfw, cy - halfh, cx + halfw, cy + halfh))
    if img.size[0] < 16 or img.size[1] < 16:
        raise ImageError(f"image of {w1}x{h1} pixels is too small for the model (at least 16x16 after resizing)")
    return normalize(np.asarray(img))


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] → float32 (x/255 − 0.5)/0.5, as torchvision's ToTensor + Normalize(0.5, 0.5)."""
    x = pixels.astype(np.float32) / np.float32(255.0)
    return ((x - np.float32(0.5)) / np.float32(0.5)).astype(np.float32)


def load_image(path: str | Path, size: int = 512, square_crop: bool | None = None) -> np.ndarray:
    return preprocess(open_image(path), size, square_crop)
