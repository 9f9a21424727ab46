"""The pose retriever: CUT3R's local pose memory, read before and written after the decoder.

The memory holds M tokens of width 2·D (key half, value half). Reading and writing use
DecoderBlocks without positional encoding.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from human3r_jax.config import Cut3rConfig
from human3r_jax.models.layers import DecoderBlock


class PoseRetriever(nnx.Module):
    def __init__(self, cfg: Cut3rConfig, *, rngs: nnx.Rngs, dtype=None):
        d = cfg.dec_embed_dim
        self.dim = d
        self.proj_q = nnx.Linear(cfg.enc_embed_dim, d, dtype=dtype, rngs=rngs)
        self.masked_token = nnx.Param(0.2 * nnx.initializers.normal(1.0)(rngs.params(), (1, 1, d)))
        self.mem = nnx.Param(0.2 * nnx.initializers.normal(1.0)(rngs.params(), (1, cfg.local_mem_size, 2 * d)))
        blk = lambda: DecoderBlock(2 * d, cfg.dec_num_heads, 4.0, rope_base=None, rngs=rngs, dtype=dtype)
        self.write_blocks = nnx.List([blk() for _ in range(2)])
        self.read_blocks = nnx.List([blk() for _ in range(2)])

    def read(self, g, mem):
        """g [B, 1, De] (mean encoder token), mem [B, M, 2D] -> pose query [B, 1, D]."""
        k = self.proj_q(g)
        x = jnp.concatenate([k, jnp.broadcast_to(self.masked_token[...], k.shape).astype(k.dtype)], axis=-1)
        for blk in self.read_blocks:
            x, _ = blk(x, mem)
        return x[..., self.dim :]

    def write(self, mem, g, pose_out):
        """mem [B, M, 2D], g [B, 1, De], pose_out [B, 1, D] (normed decoder pose token) -> new memory."""
        f = jnp.concatenate([self.proj_q(g), pose_out], axis=-1)
        for blk in self.write_blocks:
            mem, _ = blk(mem, f)
        return mem
