"""Layer semantics against PyTorch's functional ops (the reference implementations) and invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from human3r_jax.converters.rules import transform
from human3r_jax.models.heads import ConvTranspose, _conv, pixel_shuffle, upsample2x
from human3r_jax.models.layers import CrossAttention, DecoderBlock, gelu
from human3r_jax.models.letterbox import resize_bilinear
from human3r_jax.models.rope import apply_rope

torch = pytest.importorskip("torch")
F = torch.nn.functional
RNG = np.random.default_rng(0)


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (18, 32), (7, 4)])
def test_upsample2x_equals_torch_bilinear_align_corners(hw):
    x = RNG.normal(size=(2, *hw, 3)).astype(np.float32)
    ref = nhwc(F.interpolate(nchw(x), scale_factor=2, mode="bilinear", align_corners=True))
    np.testing.assert_allclose(np.asarray(upsample2x(jnp.asarray(x))), ref, rtol=1e-6, atol=1e-6)


def test_gelu_equals_torch_exact_gelu():
    # the tails too: the erf form must not lose the small negative outputs where 1 + erf(x/√2) cancels
    x = np.concatenate([RNG.normal(scale=3, size=4096), np.linspace(-12, 12, 2401)]).astype(np.float32)
    ref = F.gelu(torch.from_numpy(x.astype(np.float64)), approximate="none").numpy()
    np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(x))), ref, rtol=0, atol=2e-6)
    assert jax.grad(lambda v: gelu(v).sum())(jnp.asarray(x)).dtype == jnp.float32


@pytest.mark.parametrize("src,dst", [((288, 512), (504, 896)), ((64, 96), (74, 112)), ((5, 3), (11, 7))])
def test_resize_bilinear_equals_torch(src, dst):
    x = RNG.normal(size=(1, *src, 3)).astype(np.float32)
    ref = nhwc(F.interpolate(nchw(x), size=dst, mode="bilinear", align_corners=False))
    np.testing.assert_allclose(np.asarray(resize_bilinear(jnp.asarray(x), *dst)), ref, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("k", [2, 4])
def test_conv_transpose_kernel_equals_stride(k):
    w = RNG.normal(size=(6, 5, k, k)).astype(np.float32)  # torch [I, O, k, k]
    b = RNG.normal(size=(5,)).astype(np.float32)
    x = RNG.normal(size=(2, 3, 4, 6)).astype(np.float32)
    layer = ConvTranspose(6, 5, k, rngs=nnx.Rngs(0))
    layer.kernel[...] = transform("convT", w)
    layer.bias[...] = b
    ref = nhwc(F.conv_transpose2d(nchw(x), torch.from_numpy(w), torch.from_numpy(b), stride=k))
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,stride,hw", [(3, 1, (5, 7)), (3, 2, (5, 7)), (3, 2, (6, 8)), (1, 1, (4, 4))])
def test_conv_weight_layout_and_padding(k, stride, hw):
    w = RNG.normal(size=(5, 4, k, k)).astype(np.float32)
    b = RNG.normal(size=(5,)).astype(np.float32)
    x = RNG.normal(size=(1, *hw, 4)).astype(np.float32)
    conv = _conv(4, 5, k, nnx.Rngs(0), stride=stride)
    conv.kernel[...] = transform("conv", w)
    conv.bias[...] = b
    ref = nhwc(F.conv2d(nchw(x), torch.from_numpy(w), torch.from_numpy(b), stride=stride, padding=(k - 1) // 2))
    np.testing.assert_allclose(np.asarray(conv(jnp.asarray(x))), ref, rtol=1e-5, atol=1e-5)


def test_pixel_shuffle_equals_torch_on_token_layout():
    h, w, c, p = 3, 4, 2, 4
    tokens = RNG.normal(size=(1, h * w, c * p * p)).astype(np.float32)
    t = torch.from_numpy(tokens).transpose(-1, -2).reshape(1, c * p * p, h, w)
    ref = nhwc(F.pixel_shuffle(t, p))
    np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(tokens), (h, w), p)), ref)


def test_masked_keys_change_nothing_for_valid_tokens():
    """Padded slots hidden by the key mask: valid outputs equal a run without the padded tokens."""
    blk = DecoderBlock(16, 2, 4.0, rope_base=100.0, rngs=nnx.Rngs(0))
    x = jnp.asarray(RNG.normal(size=(1, 7, 16)), jnp.float32)
    y = jnp.asarray(RNG.normal(size=(1, 5, 16)), jnp.float32)
    xpos = jnp.asarray(RNG.integers(-1, 6, size=(1, 7, 2)), jnp.int32)
    ypos = jnp.asarray(RNG.integers(0, 6, size=(1, 5, 2)), jnp.int32)
    valid = jnp.asarray([[True] * 5 + [False] * 2])
    full, _ = blk(x, y, xpos, ypos, x_mask=valid)
    short, _ = blk(x[:, :5], y, xpos[:, :5], ypos)
    np.testing.assert_allclose(np.asarray(full[:, :5]), np.asarray(short), rtol=1e-5, atol=1e-6)
    # and as keys of someone else's cross-attention
    ca = CrossAttention(16, 2, rope_base=100.0, rngs=nnx.Rngs(1))
    out_m, lm_m = ca(y, x, ypos, xpos, key_mask=valid, return_logit_mean=True)
    out_s, lm_s = ca(y, x[:, :5], ypos, xpos[:, :5], return_logit_mean=True)
    np.testing.assert_allclose(np.asarray(out_m), np.asarray(out_s), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(lm_m), np.asarray(lm_s), rtol=1e-5, atol=1e-6)


def test_logit_mean_equals_explicit_attention_logits():
    """TTT3R's gate input: mean over heads and keys of q·k/√d, computed explicitly."""
    ca = CrossAttention(24, 3, rope_base=100.0, rngs=nnx.Rngs(2))
    x = jnp.asarray(RNG.normal(size=(2, 4, 24)), jnp.float32)
    y = jnp.asarray(RNG.normal(size=(2, 6, 24)), jnp.float32)
    xpos = jnp.asarray(RNG.integers(0, 5, size=(2, 4, 2)), jnp.int32)
    ypos = jnp.asarray(RNG.integers(-1, 5, size=(2, 6, 2)), jnp.int32)
    _, lm = ca(x, y, xpos, ypos, return_logit_mean=True)
    q = apply_rope(ca.projq(x).reshape(2, 4, 3, 8), xpos)
    k = apply_rope(ca.projk(y).reshape(2, 6, 3, 8), ypos)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8).astype(np.float32)
    np.testing.assert_allclose(np.asarray(lm), np.asarray(logits.mean(axis=(1, 3))), rtol=1e-5, atol=1e-6)
    assert lm.shape == (2, 4)
    assert jax.numpy.all(jnp.isfinite(lm))


@pytest.mark.parametrize("nq,nk,blocked", [(1030, 1100, True), (1500, 1024, True), (700, 760, True), (300, 257, False)])
def test_attention_equals_softmax(nq, nk, blocked, monkeypatch):
    """Whole, or block by block for long sequences (BLOCK_MIN_QUERIES, BLOCK_MIN_LOGITS; lowered here so that
    small ones take that path): the softmax of the scaled logits times the values, masks included."""
    from human3r_jax.models import layers

    monkeypatch.setattr(layers, "BLOCK_MIN_LOGITS", 500_000)
    assert (nq >= layers.BLOCK_MIN_QUERIES and nq * nk >= layers.BLOCK_MIN_LOGITS) == blocked

    q = jnp.asarray(RNG.normal(size=(2, nq, 2, 8)), jnp.float32)
    k = jnp.asarray(RNG.normal(size=(2, nk, 2, 8)), jnp.float32)
    v = jnp.asarray(RNG.normal(size=(2, nk, 2, 8)), jnp.float32)
    mask = jnp.asarray(RNG.uniform(size=(2, nk)) > 0.3)
    for m in (None, mask):
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8).astype(np.float32)
        if m is not None:
            logits = jnp.where(m[:, None, None, :], logits, -jnp.inf)
        ref = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v).reshape(2, nq, 16)
        np.testing.assert_allclose(np.asarray(layers.attend(q, k, v, m)), np.asarray(ref), rtol=1e-5, atol=1e-6)
