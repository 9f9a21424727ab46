"""Transformer building blocks shared by the encoder, the decoders, the pose memory and the heads.

Every LayerNorm has eps 1e-6 and every GELU is the exact (erf) one, as in the original.
Token tensors are [B, N, D]; RoPE positions are [B, N, 2] integer (row, col).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from human3r_jax.models.rope import apply_rope

EPS = 1e-6


def layer_norm(dim: int, rngs: nnx.Rngs, dtype=None) -> nnx.LayerNorm:
    return nnx.LayerNorm(dim, epsilon=EPS, dtype=dtype, rngs=rngs)


def layer_boundary(x):
    """Keep XLA from fusing across a layer boundary: XLA:CPU otherwise re-computes producers inside
    several consumers (the patch embedding in the first block's ops: 255 → 128 ms per encoder call)."""
    return jax.lax.optimization_barrier(x)


def gelu(x):
    """Exact GELU in PyTorch's form x·(1 + erf(x/√2))/2. jax.nn.gelu's erfc form is 4x slower on XLA:CPU
    (2.9 vs 0.76 ms on [576, 4096], measured on 2 cores); both are within 1.1e-6 of the float64 value."""
    return x * (1 + jax.lax.erf(x * 0.7071067811865476)) * 0.5


class Mlp(nnx.Module):
    """fc1 → GELU → fc2."""

    def __init__(self, dim: int, hidden: int, out: int | None = None, *, rngs: nnx.Rngs, dtype=None):
        self.fc1 = nnx.Linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, out or dim, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.fc2(gelu(self.fc1(x)))


def _heads(x, num_heads):
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads)


# Attention runs each head's queries in two halves once the head's logits outgrow what the cores' caches hold well:
# the DINOv2 prior at 896 px (4097²: 1.06 s per layer whole, 0.58 s in blocks of 256, 0.40 s in halves; halves beat
# every block size tried from 96 to 1366). Measured on 2 cores with the CLI's allocator (human3r_jax/allocator.py),
# the decoders' attention (768² and smaller) and DINOv2 at 672 px (2305²) are as fast or faster whole.
BLOCK_MIN_QUERIES = 640
BLOCK_MIN_LOGITS = 8_000_000


def _attend_block(q, k, v, key_mask):
    """Softmax attention, the 1/√d scale and the normalisation applied after the matmuls:
    (e·v) / Σe with e = exp((q·k − max)/√d). Neither q nor the [Nq, Nk] probabilities take a pass of their own
    (768² state self-attention: 17.7 → 13.5 ms). q [..., Nq, d], k/v [..., Nk, d], key_mask broadcastable to the
    logits or None."""
    logits = q @ k.swapaxes(-1, -2)
    if key_mask is not None:
        logits = jnp.where(key_mask, logits, jnp.finfo(logits.dtype).min)
    logits = logits.astype(jnp.float32)
    top = jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))
    e = jnp.exp((logits - top) * jnp.float32(q.shape[-1] ** -0.5))
    return ((e.astype(v.dtype) @ v) / e.sum(axis=-1, keepdims=True)).astype(v.dtype)


def _blocked(q, k, v, key_mask):
    """Attention one (batch·head, half of the queries) at a time. q [B, H, Nq, d], k/v [B, H, Nk, d]."""
    b, h, n, d = q.shape
    nc = 2
    c = -(-n // nc)
    qb = jnp.pad(q, ((0, 0), (0, 0), (0, nc * c - n), (0, 0))).reshape(b * h, nc, c, d)
    kb, vb = k.reshape(b * h, -1, d), v.reshape(b * h, -1, d)

    def block(i):
        bh, j = i // nc, i % nc
        take = lambda x, idx: jax.lax.dynamic_index_in_dim(x, idx, 0, keepdims=False)
        mask = None if key_mask is None else take(key_mask, bh // h)[None, :]
        return _attend_block(take(take(qb, bh), j), take(kb, bh), take(vb, bh), mask)

    out = jax.lax.map(block, jnp.arange(b * h * nc))  # [B·H·nc, c, d]
    return out.reshape(b, h, nc * c, d)[:, :, :n]


def attend(q, k, v, key_mask=None):
    """Scaled dot-product attention. q [B,Nq,H,d], k/v [B,Nk,H,d], key_mask [B,Nk] bool -> [B,Nq,H·d].

    Head-major matmuls: on XLA:CPU this is 2.6x faster than jax.nn.dot_product_attention's
    token-major einsums (62 → 24 ms for the state decoder's cross-attention).
    """
    b, n, h, d = q.shape
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    if n >= BLOCK_MIN_QUERIES and n * k.shape[2] >= BLOCK_MIN_LOGITS:
        out = _blocked(q, k, v, key_mask)
    else:
        out = _attend_block(q, k, v, None if key_mask is None else key_mask[:, None, None, :])
    return out.transpose(0, 2, 1, 3).reshape(b, n, h * d)


class Attention(nnx.Module):
    """Multi-head self-attention with a fused qkv projection and optional 2-D RoPE."""

    def __init__(
        self, dim: int, num_heads: int, *, rope_base: float | None, fp16_qk: bool = False, rngs: nnx.Rngs, dtype=None
    ):
        self.num_heads = num_heads
        self.rope_base = rope_base
        self.fp16_qk = fp16_qk
        self.qkv = nnx.Linear(dim, 3 * dim, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x, pos, key_mask=None):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.rope_base is not None:
            q = apply_rope(q, pos, self.rope_base, self.fp16_qk)
            k = apply_rope(k, pos, self.rope_base, self.fp16_qk)
        return self.proj(attend(q, k, v, key_mask))


class CrossAttention(nnx.Module):
    """Multi-head cross-attention (separate q, k, v projections) with optional 2-D RoPE.

    With `return_logit_mean`, also returns the mean over heads and (valid) keys of the pre-softmax
    logits q·k/√d, per query [B, Nq] (what TTT3R's gate needs). The mean of q·k over keys equals
    q·(mean of k), so no attention matrix is materialised for it.
    """

    def __init__(self, dim: int, num_heads: int, *, rope_base: float | None, rngs: nnx.Rngs, dtype=None):
        self.num_heads = num_heads
        self.rope_base = rope_base
        self.projq = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
        self.projk = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
        self.projv = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x, y, xpos, ypos, key_mask=None, return_logit_mean=False):
        q = _heads(self.projq(x), self.num_heads)
        k = _heads(self.projk(y), self.num_heads)
        v = _heads(self.projv(y), self.num_heads)
        if self.rope_base is not None:
            q = apply_rope(q, xpos, self.rope_base)
            k = apply_rope(k, ypos, self.rope_base)
        out = self.proj(attend(q, k, v, key_mask))
        if not return_logit_mean:
            return out, None
        kf = k.astype(jnp.float32)
        if key_mask is None:
            k_mean = kf.mean(axis=1)  # [B, H, d]
        else:
            w = key_mask.astype(jnp.float32)[:, :, None, None]
            k_mean = (kf * w).sum(axis=1) / w.sum(axis=1)
        scale = q.shape[-1] ** -0.5
        logit_mean = jnp.einsum("bnhd,bhd->bn", q.astype(jnp.float32), k_mean) * scale / self.num_heads
        return out, logit_mean


class Block(nnx.Module):
    """Pre-LN ViT block: x += Attn(LN x); x += MLP(LN x)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        *,
        rope_base: float | None,
        fp16_qk: bool = False,
        rngs: nnx.Rngs,
        dtype=None,
    ):
        self.norm1 = layer_norm(dim, rngs, dtype)
        self.attn = Attention(dim, num_heads, rope_base=rope_base, fp16_qk=fp16_qk, rngs=rngs, dtype=dtype)
        self.norm2 = layer_norm(dim, rngs, dtype)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)

    def __call__(self, x, pos):
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nnx.Module):
    """x += SelfAttn(LN₁x); x += CrossAttn(LN₂x, LN_y y); x += MLP(LN₃x).

    `x_mask` / `y_mask` ([B, N] bool) hide padded tokens as keys, so that padded slots change
    nothing for the valid ones.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, *, rope_base: float | None, rngs: nnx.Rngs, dtype=None
    ):
        self.norm1 = layer_norm(dim, rngs, dtype)
        self.attn = Attention(dim, num_heads, rope_base=rope_base, rngs=rngs, dtype=dtype)
        self.cross_attn = CrossAttention(dim, num_heads, rope_base=rope_base, rngs=rngs, dtype=dtype)
        self.norm2 = layer_norm(dim, rngs, dtype)
        self.norm3 = layer_norm(dim, rngs, dtype)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)
        self.norm_y = layer_norm(dim, rngs, dtype)

    def __call__(self, x, y, xpos=None, ypos=None, x_mask=None, y_mask=None, return_logit_mean=False):
        x = x + self.attn(self.norm1(x), xpos, key_mask=x_mask)
        out, logit_mean = self.cross_attn(
            self.norm2(x), self.norm_y(y), xpos, ypos, key_mask=y_mask, return_logit_mean=return_logit_mean
        )
        x = x + out
        return x + self.mlp(self.norm3(x)), logit_mean


class ModLN(nnx.Module):
    """adaLN: LN(x)·(1 + scale) + shift, (shift, scale) = Linear(SiLU(cond))."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, dtype=None):
        self.norm = layer_norm(dim, rngs, dtype)
        self.linear = nnx.Linear(dim, 2 * dim, dtype=dtype, rngs=rngs)

    def __call__(self, x, cond):
        shift, scale = jnp.split(self.linear(jax.nn.silu(cond)), 2, axis=-1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class ModulationBlock(nnx.Module):
    """ConditionModulationBlock: a ViT block whose LayerNorms are modulated by a condition token."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, rope_base: float, rngs: nnx.Rngs, dtype=None):
        self.norm1 = ModLN(dim, rngs=rngs, dtype=dtype)
        self.attn = Attention(dim, num_heads, rope_base=rope_base, rngs=rngs, dtype=dtype)
        self.norm2 = ModLN(dim, rngs=rngs, dtype=dtype)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)

    def __call__(self, x, cond, pos):
        x = x + self.attn(self.norm1(x, cond), pos)
        return x + self.mlp(self.norm2(x, cond))
