"""DINOv2 ViT, Human3R's human-prior encoder (Multi-HMR's `Dinov2Backbone`).

Forward (NHWC input, already ImageNet-normalised):

    patch conv p×p/p (+bias) → [CLS ; patches] + pos_embed
    → blocks: x ← x + γ₁⊙Attn(LN₁x); x ← x + γ₂⊙MLP(LN₂x)     (qkv bias, exact GELU, LN eps 1e-6)
    → final LN → drop CLS → [B, g², D]

which is `get_intermediate_layers(x)[0]` of the official hub model (last block, normed, patch tokens).

Position table. The checkpoint stores a 1 + 37×37 table (trained at 518 px). DINOv2 resizes it at
every call with a bicubic `F.interpolate` (PyTorch semantics, see `converters.pos_embed`). A Human3R
checkpoint runs at one fixed resolution (`mhmr_img_res`, 896 or 672), so the resize is done once,
at conversion time, in numpy: our parameter tree stores `pos_embed` **already interpolated** for the
module's `img_res`, shape [1, 1 + g², D] with g = img_res / patch (CLS row first). A model built for
another resolution needs its own conversion (the converter resizes the table for the config's `img_res`).

Parameter tree (nnx.Param leaves; names follow the official ones where they exist):

    cls_token [1, 1, D]; pos_embed [1, 1+g², D]; patch_embed.proj.{kernel [p,p,3,D], bias}
    blocks.{i}.norm1/norm2.{scale, bias}; blocks.{i}.attn.qkv/proj.{kernel, bias}
    blocks.{i}.ls1.gamma / ls2.gamma [D]; blocks.{i}.mlp.fc1/fc2.{kernel, bias}; norm.{scale, bias}
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from human3r_jax.config import DinoConfig
from human3r_jax.models.encoder import PatchEmbed
from human3r_jax.models.layers import Attention, Mlp, layer_norm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(img, channel_axis: int = -1):
    """[-1, 1] image → ((x·0.5 + 0.5) − mean) / std (ImageNet), float32, in the official op order.

    XLA rewrites a division by a broadcast divisor into a multiplication by its reciprocal (1 ulp
    off PyTorch); the full-size divisor behind an optimization barrier keeps a true division.
    """
    x = jnp.asarray(img, jnp.float32)
    shape = [1] * x.ndim
    shape[channel_axis] = 3
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32).reshape(shape)
    std = jnp.broadcast_to(jnp.asarray(IMAGENET_STD, jnp.float32).reshape(shape), x.shape)
    std = jax.lax.optimization_barrier(std)
    return (x * jnp.float32(0.5) + jnp.float32(0.5) - mean) / std


class LayerScale(nnx.Module):
    """x ↦ γ ⊙ x (per-channel, DINOv2 `ls1` / `ls2`)."""

    def __init__(self, dim: int, init_value: float = 1.0):
        self.gamma = nnx.Param(jnp.full((dim,), init_value, jnp.float32))

    def __call__(self, x):
        return x * self.gamma[...].astype(x.dtype)


class DinoBlock(nnx.Module):
    """Pre-LN ViT block with LayerScale: x += γ₁⊙Attn(LN₁x); x += γ₂⊙MLP(LN₂x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, rngs: nnx.Rngs, dtype=None):
        self.norm1 = layer_norm(dim, rngs, dtype)
        self.attn = Attention(dim, num_heads, rope_base=None, rngs=rngs, dtype=dtype)
        self.ls1 = LayerScale(dim)
        self.norm2 = layer_norm(dim, rngs, dtype)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)
        self.ls2 = LayerScale(dim)

    def __call__(self, x):
        x = x + self.ls1(self.attn(self.norm1(x), None))
        return x + self.ls2(self.mlp(self.norm2(x)))


class Dinov2(nnx.Module):
    """DINOv2 ViT for square inputs of side `img_res`: [B, R, R, 3] (ImageNet-normalised) → [B, g², D].

    `pos_embed` holds the position table interpolated for `img_res` ([1, 1 + g², D]); the random init
    draws it directly at that size (weights come from a checkpoint in practice).
    """

    def __init__(self, cfg: DinoConfig, img_res: int, *, rngs: nnx.Rngs, dtype=None):
        self.cfg = cfg
        self.img_res = img_res
        self.dtype = dtype
        g = cfg.grid(img_res)
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(3, d, cfg.patch_size, rngs=rngs, dtype=dtype)
        self.cls_token = nnx.Param(1e-6 * jax.random.normal(rngs.params(), (1, 1, d), jnp.float32))
        self.pos_embed = nnx.Param(
            0.02 * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, (1, 1 + g * g, d), jnp.float32)
        )
        self.blocks = nnx.List(
            [DinoBlock(d, cfg.num_heads, cfg.mlp_ratio, rngs=rngs, dtype=dtype) for _ in range(cfg.depth)]
        )
        self.norm = layer_norm(d, rngs, dtype)
        # DINOv2's token for masked-image pre-training: unused here, kept so every checkpoint key has a home.
        self.mask_token = nnx.Param(jnp.zeros((1, d), jnp.float32))

    def __call__(self, img, taps: dict | None = None):
        """img [B, R, R, 3] → patch tokens [B, g², D] after the final LayerNorm (CLS dropped).

        `taps` (a dict) receives `dino_patch_embed` [B, g², D] and `dino_block{i}` [B, 1 + g², D].
        """
        b, h, w, c = img.shape
        if (h, w, c) != (self.img_res, self.img_res, 3):
            raise ValueError(
                f"DINOv2 was built for {self.img_res}x{self.img_res}x3 inputs (its position "
                f"table is interpolated for that size), got {h}x{w}x{c} (HxWxC)"
            )
        x, _ = self.patch_embed(img)
        if taps is not None:
            taps["dino_patch_embed"] = x
        cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (b, 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.pos_embed[...].astype(x.dtype)
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if taps is not None:
                taps[f"dino_block{i}"] = x
        return self.norm(x)[:, 1:]


# ----------------------------------------------------------------------------------------------
# Official checkpoint → our parameter tree
# ----------------------------------------------------------------------------------------------
