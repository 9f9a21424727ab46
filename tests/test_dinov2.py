"""DINOv2 human-prior encoder: bicubic position-table resize (vs torch) and the tiny model vs the fixture."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_DINO, rel_l2, shared_path
from flax import nnx

from human3r_jax.config import DinoConfig, dino_preset
from human3r_jax.converters.pos_embed import resize_pos_embed
from human3r_jax.models.dinov2 import Dinov2, imagenet_normalize

FIX = ("fixtures", "human3r_tiny")


def _torch_resize(pos_embed: np.ndarray, grid: int, offset: float = 0.1) -> np.ndarray:
    """DINOv2's interpolate_pos_encoding in torch (the reference)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t = torch.from_numpy(pos_embed)
    m = int(round((t.shape[1] - 1) ** 0.5))
    patches = t[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
    kw = {"scale_factor": ((grid + offset) / m, (grid + offset) / m)} if offset else {"size": (grid, grid)}
    out = F.interpolate(patches, mode="bicubic", antialias=False, **kw)
    assert tuple(out.shape[-2:]) == (grid, grid)
    return torch.cat([t[:, :1], out.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1).numpy()


@pytest.mark.parametrize("grid", [8, 48, 64])
@pytest.mark.parametrize("std", [0.02, 1.0])
def test_resize_pos_embed_matches_torch(grid, std):
    pe = (np.random.default_rng(grid).standard_normal((1, 1 + 37 * 37, 32)) * std).astype(np.float32)
    ours = resize_pos_embed(pe, grid)
    ref = _torch_resize(pe, grid)
    assert ours.shape == (1, 1 + grid * grid, 32) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours[:, 0], pe[:, 0])  # CLS row kept first
    err = float(np.abs(ours - ref).max())
    # a float32-rounding margin for torch builds with other FMA contractions (unfused: ~1.3e-5·std)
    assert err <= (1e-6 if std < 0.1 else 3e-5 * std), err
    if _torch_cpu_capability() == "AVX2":  # the build our FMA emulation was checked against
        assert err == 0.0, err


def _torch_cpu_capability() -> str:
    import platform

    torch = pytest.importorskip("torch")
    return torch.backends.cpu.get_cpu_capability() if platform.machine() in ("x86_64", "AMD64") else ""


def test_resize_pos_embed_scale_rule():
    """The given scale (not in/out) places the source samples: `size=` gives a different table."""
    pe = np.random.default_rng(0).standard_normal((1, 1 + 37 * 37, 8)).astype(np.float32)
    with_scale = resize_pos_embed(pe, 8)
    with_size = resize_pos_embed(pe, 8, interpolate_offset=None)
    np.testing.assert_allclose(with_size, _torch_resize(pe, 8, offset=0), rtol=0, atol=1e-6)
    assert np.abs(with_scale - with_size).max() > 1e-2
    # the stored grid is returned as is (DINOv2 skips the resize), the offset would not be the identity
    np.testing.assert_array_equal(resize_pos_embed(pe, 37), pe)


def test_resize_pos_embed_fixture_table():
    from human3r_jax.converters.convert import read_official

    state, _ = read_official(shared_path(*FIX, "checkpoint.pth"))
    cfg = TINY_DINO
    ours = resize_pos_embed(state["backbone.encoder.pos_embed"].array, cfg.grid(112))
    ref = np.load(shared_path(*FIX, "intermediates.npz"))["dino_pos_embed"]
    assert ours.shape == (1,) + ref.shape
    np.testing.assert_allclose(ours[0], ref, rtol=0, atol=1e-6)


def test_imagenet_normalize_fixture():
    img = np.load(shared_path(*FIX, "inputs.npz"))["img_mhmr"]
    ref = np.load(shared_path(*FIX, "intermediates.npz"))["dino_input"]
    ours = np.asarray(imagenet_normalize(jnp.asarray(img.transpose(0, 2, 3, 1))))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours.transpose(0, 3, 1, 2), ref, rtol=0, atol=1e-6)
    nchw = np.asarray(imagenet_normalize(jnp.asarray(img), channel_axis=1))
    np.testing.assert_allclose(nchw, ref, rtol=0, atol=1e-6)


def test_presets_and_fixture_config():
    assert (
        dino_preset("dinov2_vitl14").embed_dim,
        dino_preset("dinov2_vitl14").depth,
        dino_preset("dinov2_vitl14").num_heads,
    ) == (1024, 24, 16)
    assert dino_preset("dinov2_vits14") == DinoConfig(384, 12, 6)
    assert dino_preset("dinov2_vitb14") == DinoConfig(768, 12, 12)
    assert dino_preset("dinov2_vitl14").grid(896) == 64 and dino_preset("dinov2_vitl14").grid(672) == 48
    with pytest.raises(ValueError):
        dino_preset("dinov2_vitl14").grid(900)
    conf = json.loads(shared_path(*FIX, "config.json").read_text())
    text = json.dumps(conf)
    assert '"dinov2_tiny14"' in text
    tiny = TINY_DINO
    spec = _find_key(conf, "dinov2_tiny14")
    assert (spec["embed_dim"], spec["depth"], spec["num_heads"], spec["patch_size"]) == (
        tiny.embed_dim,
        tiny.depth,
        tiny.num_heads,
        tiny.patch_size,
    )
    assert spec["interpolate_offset"] == tiny.interpolate_offset and spec["img_size"] // 14 == tiny.pretrain_grid


def _find_key(obj, key):
    if isinstance(obj, dict):
        if key in obj and isinstance(obj[key], dict):
            return obj[key]
        for v in obj.values():
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


_PARAMS = {}


def _backbone_params() -> dict:
    """The fixture's DINOv2 weights through the project's converter (rule table + resized table)."""
    if not _PARAMS:
        from human3r_jax.converters.convert import convert_file

        _, params, _ = convert_file(shared_path(*FIX, "checkpoint.pth"), TINY_DINO)
        _PARAMS.update(params["backbone"])
    return _PARAMS


def _tiny_model():
    model = Dinov2(TINY_DINO, 112, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, _backbone_params()))
    return nnx.merge(graphdef, state)


def test_dinov2_tiny_matches_fixture():
    model = _tiny_model()
    inter = np.load(shared_path(*FIX, "intermediates.npz"))
    x = jnp.asarray(inter["dino_input"].transpose(0, 2, 3, 1))
    taps = {}
    tokens = model(x, taps)
    errs = {
        "dino_patch_embed": rel_l2(taps["dino_patch_embed"], inter["dino_patch_embed"]),
        "dino_block0": rel_l2(taps["dino_block0"], inter["dino_block0"]),
        "dino_block1": rel_l2(taps["dino_block1"], inter["dino_block1"]),
        "dino_tokens": rel_l2(tokens, inter["dino_tokens"]),
    }
    print("DINOv2 tiny rel. L2 errors:", errs)
    assert tokens.shape == inter["dino_tokens"].shape
    for k, e in errs.items():
        assert e < 1e-4, (k, e)
    # jit gives the same tokens
    jitted = nnx.jit(lambda m, x: m(x))(model, x)
    assert rel_l2(jitted, inter["dino_tokens"]) < 1e-4


def test_dinov2_wrong_input_size_raises():
    model = Dinov2(TINY_DINO, 112, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError):
        model(jnp.zeros((1, 126, 126, 3), jnp.float32))
    assert model(jnp.zeros((2, 112, 112, 3), jnp.float32)).shape == (2, 64, 64)


def test_converter_maps_the_backbone():
    from human3r_jax.converters.convert import read_official

    state, _ = read_official(shared_path(*FIX, "checkpoint.pth"))
    params = _backbone_params()
    assert params["pos_embed"].shape == (1, 65, 64)  # resized to the 8×8 grid at conversion
    np.testing.assert_array_equal(
        params["blocks"][1]["attn"]["qkv"]["kernel"], state["backbone.encoder.blocks.1.attn.qkv.weight"].array.T
    )
    np.testing.assert_array_equal(
        params["patch_embed"]["proj"]["kernel"][2, 5, 1],
        state["backbone.encoder.patch_embed.proj.weight"].array[:, 1, 2, 5],
    )
    np.testing.assert_array_equal(
        params["blocks"][0]["ls1"]["gamma"], state["backbone.encoder.blocks.0.ls1.gamma"].array
    )


def test_dinov2_bfloat16_runs_close():
    """Mixed precision: bfloat16 compute with float32 parameters.

    Runs under standard promotion: flax's own nnx.LayerNorm promotes bfloat16 with float32 for its
    statistics, which strict promotion rejects (not a cast of ours).
    """
    f32 = _tiny_model()
    _graphdef, state = nnx.split(f32, nnx.Param)
    bf16 = nnx.merge(nnx.graphdef(Dinov2(TINY_DINO, 112, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)), state)
    x = jnp.asarray(np.load(shared_path(*FIX, "intermediates.npz"))["dino_input"][:2].transpose(0, 2, 3, 1))
    with jax.numpy_dtype_promotion("standard"):
        out = bf16(x)
    assert out.dtype == jnp.bfloat16
    err = rel_l2(np.asarray(out.astype(jnp.float32)), np.asarray(f32(x)))
    assert 0 < err < 3e-2, err


def test_vitl14_abstract_shapes():
    cfg = dino_preset("dinov2_vitl14")
    model = nnx.eval_shape(lambda: Dinov2(cfg, 896, rngs=nnx.Rngs(0)))
    shapes = {"/".join(map(str, k)): v.shape for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert shapes["pos_embed"] == (1, 1 + 64 * 64, 1024)
    assert shapes["patch_embed/proj/kernel"] == (14, 14, 3, 1024)
    assert shapes["blocks/23/mlp/fc1/kernel"] == (1024, 4096)
    n = sum(int(np.prod(s)) for s in shapes.values())
    # official ViT-L/14 DINOv2: 304,368,640 parameters with a 1370-row table; ours holds the 4097-row one
    assert n == 304_368_640 - 1370 * 1024 + 4097 * 1024
