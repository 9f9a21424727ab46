"""Preprocessing against the `preprocess` fixture of the official `load_images` / `pad_image`.

Tolerances: the resized pixels are bit-identical (PIL does the resampling on both sides), so the
normalised images must be exactly equal; `pad_image` (bilinear in float32) within 2e-6 absolute;
`unpad_uv` within 1e-4 px; `unpad_image` exact.
"""

import json

import numpy as np
import PIL.Image
import pytest
from conftest import shared_path

from human3r_jax.data import images as I
from human3r_jax.models import letterbox as L


@pytest.fixture(scope="module")
def fixture():
    root = shared_path("fixtures", "preprocess")
    cfg = json.loads((root / "config.json").read_text())
    with np.load(root / "preprocess.npz") as z:
        arrays = dict(z)
    return root, cfg, arrays


def _entries(cfg):
    return [(e["image"], e["image"].split("/")[-1][:-4]) for e in cfg["images"]]


@pytest.mark.parametrize("size", [512, 224])
def test_load_images_bit_exact(fixture, size):
    root, cfg, d = fixture
    for path, name in _entries(cfg):
        ours = I.load_image(root / path, size)
        ref = d[f"{name}__img_{size}"][0].transpose(1, 2, 0)
        np.testing.assert_array_equal(ours, ref, err_msg=f"{name} at {size}")
        h, w = d[f"{name}__true_shape_{size}"][0]
        raw = I.open_image(root / path)
        assert I.model_size(*raw.size, size) == (w, h)


def test_pad_image(fixture):
    _, cfg, d = fixture
    n = 0
    for name, pads in cfg["pads"].items():
        for size, res in pads:
            src = d[f"{name}__img_{size}"].transpose(0, 2, 3, 1)
            ref = d[f"{name}__img_mhmr_{size}_{res}"].transpose(0, 2, 3, 1)
            np.testing.assert_allclose(np.asarray(L.pad_image(src, res)), ref, rtol=0, atol=2e-6)
            n += 1
    assert n >= 5


def test_unpad_uv_and_image(fixture):
    _, cfg, d = fixture
    for _, name in _entries(cfg):
        h, w = (int(v) for v in d[f"{name}__true_shape_512"][0])
        uv = np.asarray(L.unpad_uv(d[f"{name}__unpad_uv_in_896"], 896, h, w))
        np.testing.assert_allclose(uv, d[f"{name}__unpad_uv_512_896"], rtol=0, atol=1e-4)
        m = np.asarray(L.unpad_image(d[f"{name}__unpad_image_in"].transpose(0, 2, 3, 1), h, w))
        np.testing.assert_array_equal(m, d[f"{name}__unpad_image_512"].transpose(0, 2, 3, 1))
    for res in (896, 672, 112):
        np.testing.assert_allclose(L.prior_intrinsics(res), d[f"K_mhmr_{res}"][0], rtol=1e-7)


@pytest.mark.parametrize(
    "wh,size,expected",
    [
        ((1920, 1080), 512, (512, 288)),
        ((640, 480), 512, (512, 384)),
        ((500, 500), 512, (512, 384)),
        ((1080, 1920), 512, (288, 512)),
        ((300, 200), 224, (224, 224)),
    ],
)
def test_model_size_rule(wh, size, expected):
    assert I.model_size(*wh, size) == expected
    img = PIL.Image.new("RGB", wh, (10, 20, 30))
    assert I.preprocess(img, size).shape == (expected[1], expected[0], 3)


def test_bad_images(tmp_path):
    with pytest.raises(I.ImageError, match="no such file"):
        I.load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(I.ImageError, match="bad.png"):
        I.load_image(bad)
    with pytest.raises(I.ImageError, match="too small"):
        I.preprocess(PIL.Image.new("RGB", (600, 8)), 512)


def test_16_bit_greyscale_keeps_its_high_byte(tmp_path):
    """PIL's RGB conversion clips 16-bit values at 255 (a white frame); we keep the high byte."""
    grey = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21 % 65536).astype(np.uint16)
    PIL.Image.fromarray(grey).save(tmp_path / "g16.png")
    assert PIL.Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = np.asarray(I.open_image(tmp_path / "g16.png"))
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(rgb, np.repeat((grey >> 8).astype(np.uint8)[..., None], 3, axis=-1))
