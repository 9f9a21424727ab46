"""CUT3R's image encoder (ViT, RoPE only) and its ray-map encoder."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from human3r_jax.config import Cut3rConfig
from human3r_jax.models.layers import Block, layer_boundary, layer_norm
from human3r_jax.models.rope import grid_positions


class PatchProj(nnx.Module):
    """A p×p convolution with stride p (kernel HWIO [p, p, C, D]), computed as patchify + matmul:
    XLA:CPU's strided convolution takes ~1 s for CUT3R's 512×288 patch embedding, the matmul 10 ms."""

    def __init__(self, in_chans: int, dim: int, patch: int, *, rngs: nnx.Rngs, dtype=None):
        self.dtype = dtype
        self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (patch, patch, in_chans, dim)))
        self.bias = nnx.Param(jnp.zeros((dim,)))

    def __call__(self, img):
        b, h, w, c = img.shape
        p, _, _, d = self.kernel.shape
        x = img.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // p, w // p, p * p * c)
        kernel, bias = self.kernel[...].reshape(p * p * c, d), self.bias[...]
        if self.dtype is not None:
            x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
        return x @ kernel + bias


class PatchEmbed(nnx.Module):
    """Non-overlapping p×p patches: [B, H, W, C] -> tokens [B, (H/p)(W/p), D], positions [B, N, 2]."""

    def __init__(self, in_chans: int, dim: int, patch: int, *, rngs: nnx.Rngs, dtype=None):
        self.patch = patch
        self.proj = PatchProj(in_chans, dim, patch, rngs=rngs, dtype=dtype)

    def __call__(self, img):
        b, h, w, _ = img.shape
        p = self.patch
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} (HxW) is not a multiple of the patch size {p}")
        x = self.proj(img)
        pos = jnp.broadcast_to(jnp.asarray(grid_positions(h // p, w // p)), (b, (h // p) * (w // p), 2))
        return x.reshape(b, -1, x.shape[-1]), pos


class Encoder(nnx.Module):
    """Patch embedding → pre-LN ViT blocks with RoPE → LayerNorm."""

    def __init__(
        self, cfg: Cut3rConfig, *, in_chans: int, depth: int, num_heads: int, fp16_qk: bool, rngs: nnx.Rngs, dtype=None
    ):
        self.patch_embed = PatchEmbed(in_chans, cfg.enc_embed_dim, cfg.patch_size, rngs=rngs, dtype=dtype)
        self.blocks = nnx.List(
            [
                Block(
                    cfg.enc_embed_dim,
                    num_heads,
                    cfg.mlp_ratio,
                    rope_base=cfg.rope_base,
                    fp16_qk=fp16_qk,
                    rngs=rngs,
                    dtype=dtype,
                )
                for _ in range(depth)
            ]
        )
        self.norm = layer_norm(cfg.enc_embed_dim, rngs, dtype)

    def __call__(self, img, taps=None):
        """img [B, H, W, C] -> (F [B, N, De], pos [B, N, 2])."""
        x, pos = self.patch_embed(img)
        if taps is not None:
            taps["patch_embed"] = x
        for i, blk in enumerate(self.blocks):
            x = blk(layer_boundary(x), pos)
            if taps is not None:
                taps[f"enc_block{i}"] = x
        return self.norm(x), pos


def image_encoder(cfg: Cut3rConfig, rngs: nnx.Rngs, dtype=None) -> Encoder:
    return Encoder(
        cfg,
        in_chans=3,
        depth=cfg.enc_depth,
        num_heads=cfg.enc_num_heads,
        fp16_qk=cfg.encoder_fp16_qk,
        rngs=rngs,
        dtype=dtype,
    )


def ray_map_encoder(cfg: Cut3rConfig, rngs: nnx.Rngs, dtype=None) -> Encoder:
    """Encoder of 6-channel ray maps (origin, direction); its RoPE runs in float32."""
    return Encoder(
        cfg, in_chans=6, depth=cfg.ray_enc_depth, num_heads=cfg.ray_enc_num_heads, fp16_qk=False, rngs=rngs, dtype=dtype
    )
