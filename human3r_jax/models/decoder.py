"""The paired image/state decoders of CUT3R.

Both streams are updated from the previous layer's pair, in parallel:
S^l = StateBlock_l(S^{l-1}, memory = X^{l-1}),  X^l = ImageBlock_l(X^{l-1}, memory = S^{l-1}).
"""

from __future__ import annotations

from flax import nnx

from human3r_jax.config import Cut3rConfig
from human3r_jax.models.layers import DecoderBlock, layer_boundary, layer_norm


class Decoders(nnx.Module):
    def __init__(self, cfg: Cut3rConfig, *, rngs: nnx.Rngs, dtype=None):
        d = cfg.dec_embed_dim
        self.embed = nnx.Linear(cfg.enc_embed_dim, d, dtype=dtype, rngs=rngs)  # decoder_embed
        self.img_blocks = nnx.List(
            [
                DecoderBlock(d, cfg.dec_num_heads, cfg.mlp_ratio, rope_base=cfg.rope_base, rngs=rngs, dtype=dtype)
                for _ in range(cfg.dec_depth)
            ]
        )
        self.img_norm = layer_norm(d, rngs, dtype)
        self.state_blocks = nnx.List(
            [
                DecoderBlock(d, cfg.state_dec_num_heads, cfg.mlp_ratio, rope_base=cfg.rope_base, rngs=rngs, dtype=dtype)
                for _ in range(cfg.dec_depth)
            ]
        )
        self.state_norm = layer_norm(d, rngs, dtype)

    def __call__(self, state, state_pos, x, x_pos, x_mask=None, logits=False, taps=None):
        """state [B, S, D], x [B, K, D] (pose, image, human tokens), x_mask [B, K] (valid tokens).

        Returns (ŝ = LN(S^L) [B, S, D], [X^1, …, X^{L-1}, LN(X^L)], logits [B, S] or None): with
        `logits`, the state→image cross-attention logits averaged over layers, heads and valid keys
        (what TTT3R's gate reads; see models/state_update.py).
        """
        xs, logit_sum = [], None
        for i, (sblk, iblk) in enumerate(zip(self.state_blocks, self.img_blocks)):
            state, x = layer_boundary((state, x))
            new_state, lm = sblk(state, x, state_pos, x_pos, y_mask=x_mask, return_logit_mean=logits)
            x, _ = iblk(x, state, x_pos, state_pos, x_mask=x_mask)
            state = new_state
            if logits:
                logit_sum = lm if logit_sum is None else logit_sum + lm
            if taps is not None:
                taps[f"dec_state_l{i + 1}"] = state
                taps[f"dec_img_l{i + 1}"] = x
            xs.append(x)
        xs[-1] = self.img_norm(xs[-1])
        mean = None if logit_sum is None else logit_sum / len(self.state_blocks)
        return self.state_norm(state), xs, mean
