"""Human3R: CUT3R plus a human-prior encoder, human prompt tokens and SMPL-X readout.

One online step:
  image → CUT3R encoder F [B, N, De]
  padded square (pad_image to R, ImageNet-normalised) → DINOv2 Z [B, g², Db]
  → detections (slots) → prompts e = mlp_fuse([Z_h ‖ F at the head's CUT3R patch]) [B, S, Dd]
  → decoders on [pose ; image ; prompts] (empty slots hidden from attention)
  → CUT3R heads on pose + image tokens; SMPL-X heads on [X̂_h ‖ Z_h]; mask head on Z
  → state update (gated / TTT3R / reset) and track ids (Sinkhorn matching of X̂_h).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from human3r_jax.config import Human3rConfig
from human3r_jax.models.cut3r import Carry, Cut3r, Frame, StepOptions, check_frame
from human3r_jax.models.dinov2 import Dinov2, imagenet_normalize
from human3r_jax.models.human import HumanHead
from human3r_jax.models.letterbox import pad_image
from human3r_jax.models.tracking import init_tracks, track


class Human3r(Cut3r):
    def __init__(self, hcfg: Human3rConfig, *, rngs: nnx.Rngs, dtype=None):
        super().__init__(hcfg.cut3r, rngs=rngs, dtype=dtype)
        self.hcfg = hcfg
        c, db = hcfg.cut3r, hcfg.dino.embed_dim
        self.backbone = Dinov2(hcfg.dino, hcfg.img_res, rngs=rngs, dtype=dtype)
        self.human = HumanHead(c.dec_embed_dim, c.enc_embed_dim, db, hcfg.dino.patch_size, hcfg.msk_head, rngs=rngs)
        # Padding tokens of the official training (empty slots); unused at inference.
        normal = nnx.initializers.normal(0.02)
        self.masked_smpl_token = nnx.Param(normal(rngs.params(), (1, c.enc_embed_dim)))
        self.mhmr_masked_smpl_token = nnx.Param(normal(rngs.params(), (1, db)))
        self.mhmr_masked_img_token = nnx.Param(normal(rngs.params(), (1, db)))

    def init_carry(self, batch: int = 1) -> Carry:
        carry = super().init_carry(batch)
        tracks = jax.vmap(lambda _: init_tracks(self.hcfg.track_capacity, self.hcfg.cut3r.dec_embed_dim))(
            jnp.arange(batch)
        )
        return carry._replace(tracks=tracks)

    def prior_tokens(self, img, taps=None):
        """img [B, H, W, 3] in [-1, 1] → DINOv2 tokens [B, g², Db] of the letter-boxed square."""
        x = imagenet_normalize(pad_image(img, self.hcfg.img_res))
        if taps is not None:
            taps["dino_input"] = x
        with jax.named_scope("dinov2"):
            z = self.backbone(x, taps)
        if taps is not None:
            taps["dino_tokens"] = z
        return z

    def step(self, carry: Carry, frame: Frame, opts: StepOptions = StepOptions()):
        check_frame(carry, frame)
        hc, c = self.hcfg, self.hcfg.cut3r
        taps = {} if opts.taps else None
        h, w = frame.img.shape[1:3]
        feat, pos = self.encode(frame.img, taps)
        z = self.prior_tokens(frame.img, taps).astype(jnp.float32)
        grid = hc.dino.grid(hc.img_res)
        with jax.named_scope("human_prompts"):
            scores, idx, valid, n_det = self.human.detect(z, grid, hc.det_threshold, hc.max_humans, taps)
            z_h = jnp.take_along_axis(z, idx[..., None], axis=1)
            loc = self.human.locate(z_h, idx, grid, taps)
            prompts, pos_h = self.human.prompts(z_h, feat, pos, loc, hc.img_res, (h, w), c.patch_size, taps)
        out, new_state, new_mem, gate = self.decode(
            carry, feat, pos, (h, w), opts, extra=(prompts, pos_h, valid), taps=taps
        )
        x_h = out.pop("extra_tokens").astype(jnp.float32)
        with jax.named_scope("smplx_head"):
            out.update(self.human.smpl(x_h, z_h, taps))
        with jax.named_scope("tracking"):
            tracks, ids = jax.vmap(track)(carry.tracks, x_h, valid)
        score = jnp.take_along_axis(scores.reshape(scores.shape[0], -1), idx, axis=1)
        out.update(
            smpl_scores=scores[..., None],
            smpl_score=jnp.where(valid, score, 0.0),
            smpl_loc=loc,
            smpl_valid=valid,
            smpl_id=ids,
            n_humans=valid.sum(axis=1).astype(jnp.int32),
            n_detected=n_det,
        )
        if hc.msk_head:
            out["msk"] = self.human.mask(z, grid)
        carry = self.update(carry, frame, new_state, new_mem, gate, opts, taps)._replace(tracks=tracks)
        if taps is not None:
            taps.update(state_out=carry.state, mem_out=carry.mem)
            out["taps"] = taps
        return carry, out
