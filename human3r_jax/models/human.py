"""Human3R's human branch: detection on the DINOv2 grid, human prompt tokens, SMPL-X readout
and the segmentation head.

Under jit the number of humans is static: a frame has `max_humans` slots with a validity mask.
Detections fill the slots in raster order (as the official enumeration); with more detections than
slots, the highest-scoring ones are kept (still in raster order) and `n_detected` reports the excess.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from human3r_jax.models.heads import depth_exp, pixel_shuffle
from human3r_jax.models.layers import Mlp
from human3r_jax.models.letterbox import unpad_uv

N_ROT = 53  # 0 global orientation, 1–21 body, 22–36 left hand, 37–51 right hand, 52 jaw
EPS_SCORE = 1e-6


class ReluMlp(nnx.Module):
    """Linear → ReLU → Linear (Multi-HMR's `regression_mlp`)."""

    def __init__(self, dim: int, out: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(dim, dim, rngs=rngs)
        self.fc2 = nnx.Linear(dim, out, rngs=rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.relu(self.fc1(x)))


def squeeze_score(logits):
    """sigmoid squeezed into [1e-6, 1 − 1e-6]."""
    return jax.nn.sigmoid(logits) * (1 - 2 * EPS_SCORE) + EPS_SCORE


def nms3x3(scores):
    """Keep the values equal to their 3×3 neighbourhood maximum, zero the others. scores [B, g, g]."""
    hmax = jax.lax.reduce_window(scores, -jnp.inf, jax.lax.max, (1, 3, 3), (1, 1, 1), ((0, 0), (1, 1), (1, 1)))
    return jnp.where(hmax == scores, scores, 0.0)


def select_slots(scores, threshold: float, slots: int):
    """Detections (scores ≥ threshold) → slot cell indices [B, slots] in raster order, valid [B, slots],
    and the number of detections [B] (may exceed `slots`: the highest scores are kept)."""
    b = scores.shape[0]
    flat = scores.reshape(b, -1)
    cells = flat.shape[1]
    det = flat >= threshold
    k = min(slots, cells)
    best, top = jax.lax.top_k(jnp.where(det, flat, -jnp.inf), k)  # best first
    kept = best > -jnp.inf
    order = jnp.sort(jnp.where(kept, top, cells), axis=1)  # raster order, empty slots last
    valid = order < cells
    idx = jnp.where(valid, order, 0)
    if k < slots:
        pad = ((0, 0), (0, slots - k))
        idx, valid = jnp.pad(idx, pad), jnp.pad(valid, pad)
    return idx.astype(jnp.int32), valid, det.sum(axis=1).astype(jnp.int32)


def rot6d_to_rotmat(x, eps: float = 1e-6):
    """[..., 6] read row-major as a 3×2 matrix (columns a₁, a₂) → Gram–Schmidt rotation [..., 3, 3]
    with columns b₁, b₂, b₁×b₂."""
    m = x.reshape(x.shape[:-1] + (3, 2))
    a1, a2 = m[..., 0], m[..., 1]
    b1 = a1 / jnp.maximum(jnp.linalg.norm(a1, axis=-1, keepdims=True), eps)
    b2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 = b2 / jnp.maximum(jnp.linalg.norm(b2, axis=-1, keepdims=True), eps)
    return jnp.stack([b1, b2, jnp.cross(b1, b2)], axis=-1)


class HumanHead(nnx.Module):
    """Detection MLPs on DINOv2 tokens, prompt fusion (`mlp_fuse`), SMPL-X regressors, mask head."""

    def __init__(self, dec_dim: int, enc_dim: int, prior_dim: int, patch: int, msk_head: bool, *, rngs: nnx.Rngs):
        read = dec_dim + prior_dim
        self.patch = patch
        self.dec_dim = dec_dim
        self.mlp_classif = ReluMlp(prior_dim, 1, rngs=rngs)
        self.mlp_offset = ReluMlp(prior_dim, 2, rngs=rngs)
        self.mlp_msk = Mlp(prior_dim, prior_dim, patch * patch, rngs=rngs) if msk_head else None
        self.mlp_fuse = Mlp(enc_dim + prior_dim, 4 * (enc_dim + prior_dim), dec_dim, rngs=rngs)
        self.decpose = Mlp(read, 4 * read, 6 * N_ROT, rngs=rngs)
        self.decshape = Mlp(read, 4 * read, 10, rngs=rngs)
        self.decexpression = Mlp(read, 4 * read, 10, rngs=rngs)
        self.deccam = Mlp(dec_dim, 4 * dec_dim, 3, rngs=rngs)
        # Initial values the regressors add to (official buffers; init_betas_kid and init_cam are
        # unused by this model and kept so every checkpoint entry has a home).
        ident6 = np.tile(np.eye(3)[:, :2].reshape(6), N_ROT).astype(np.float32)
        self.init_body_pose = nnx.Param(jnp.asarray(ident6)[None])
        self.init_betas = nnx.Param(jnp.zeros((1, 10)))
        self.init_betas_kid = nnx.Param(jnp.zeros((1, 11)))
        self.init_cam = nnx.Param(jnp.zeros((1, 3)))
        self.init_expression = nnx.Param(jnp.zeros((1, 10)))

    def detect(self, z, grid: int, threshold: float, slots: int, taps=None):
        """z [B, g², Db] → scores after NMS [B, g, g], slot cells [B, S], valid [B, S], detections [B]."""
        b = z.shape[0]
        logits = self.mlp_classif(z)[..., 0]
        scores = nms3x3(squeeze_score(logits).reshape(b, grid, grid))
        idx, valid, n_det = select_slots(scores, threshold, slots)
        if taps is not None:
            taps["det_logits"] = logits
        return scores, idx, valid, n_det

    def locate(self, z_h, idx, grid: int, taps=None):
        """Head pixel (x, y) in the padded square: ((col, row) + ½ + δ)·patch, δ = mlp_offset."""
        offset = self.mlp_offset(z_h)
        cell = jnp.stack([idx % grid, idx // grid], axis=-1).astype(jnp.float32)
        if taps is not None:
            taps["det_offset"] = offset
        return (cell + 0.5 + offset) * self.patch

    @staticmethod
    def head_tokens(feat, pos, loc, img_res: int, hw, patch: int):
        """CUT3R token c_h [B, S, De] and position [B, S, 2] at the patch holding each head pixel
        `loc` [B, S, 2] of the padded square."""
        h, w = hw
        uv = unpad_uv(loc, img_res, h, w)
        col = jnp.floor(uv[..., 0] / patch).astype(jnp.int32)
        row = jnp.floor(uv[..., 1] / patch).astype(jnp.int32)
        tok = row * (w // patch) + col
        return jnp.take_along_axis(feat, tok[..., None], axis=1), jnp.take_along_axis(pos, tok[..., None], axis=1)

    def prompts(self, z_h, feat, pos, loc, img_res: int, hw, patch: int, taps=None):
        """Human prompt tokens e = mlp_fuse([z_h ‖ c_h]) at the CUT3R patch of each head, and its position."""
        c_h, pos_h = self.head_tokens(feat, pos, loc, img_res, hw, patch)
        fuse_in = jnp.concatenate([z_h, c_h.astype(z_h.dtype)], axis=-1)
        e = self.mlp_fuse(fuse_in)
        if taps is not None:
            taps.update(fuse_in=fuse_in, human_prompt=e, human_pos=pos_h)
        return e, pos_h

    def smpl(self, x_h, z_h, taps=None):
        """Readout [X̂_h ‖ z_h] → SMPL-X parameters of each slot."""
        r = jnp.concatenate([x_h, z_h.astype(x_h.dtype)], axis=-1)
        pose = self.decpose(r)
        shape = self.decshape(r)
        expr = self.decexpression(r)
        cam = self.deccam(x_h)
        if taps is not None:
            taps.update(smpl_readout=r, decpose_raw=pose, decshape_raw=shape, decexpression_raw=expr, deccam_raw=cam)
        return {
            "smpl_rotmat": rot6d_to_rotmat((pose + self.init_body_pose[...]).reshape(pose.shape[:-1] + (N_ROT, 6))),
            "smpl_shape": shape + self.init_betas[...],
            "smpl_expression": expr + self.init_expression[...],
            "smpl_transl": depth_exp(cam),
        }

    def mask(self, z, grid: int):
        """Human mask probability on the padded square image [B, R, R, 1]."""
        return pixel_shuffle(squeeze_score(self.mlp_msk(z)), (grid, grid), self.patch)
