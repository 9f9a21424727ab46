"""Human3R's training forward over a multi-view sample (the official `_forward_impl`).

Differences from the online step, all as in the official training:
  * slots come from the ground-truth head cells (targets.human_targets), not from detections;
    the head pixel is still the cell centre plus the predicted sub-patch offset;
  * every one of the M slots enters the decoder: an empty slot carries the padding tokens
    (`masked_smpl_token` for CUT3R's half of the prompt input, `mhmr_masked_smpl_token` for the
    prior's) at RoPE position 0, and is not hidden from attention;
  * the detection scores are read before NMS (the focal loss's input);
  * views may carry a ray map: its encoding is added to the image tokens, and when any view of
    the batch has one, views without it get `masked_ray_map_token` added (a quirk kept as is).

Gradient flow: encoder, ray encoder and DINOv2 outputs are constants (stop_gradient), and so are
the inputs of `mlp_fuse`; gradients reach `mlp_fuse`, the SMPL-X and mask heads through the
(frozen) decoders and heads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from human3r_jax.models import state_update as su
from human3r_jax.models.cut3r import Cut3r, Frame, StepOptions
from human3r_jax.models.human import squeeze_score
from human3r_jax.models.human3r import Human3r

TRAIN_STEP = StepOptions(rgb=True, cross=True, state_update=su.cut3r, pose_token_after_reset=True)


def _where(mask, x, fill):
    """x where mask [N] holds, else fill (broadcast)."""
    return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x, fill.astype(x.dtype))


def encode_views(model: Human3r, img, ray_map, img_mask, ray_mask):
    """[N, H, W, 3|6] images and ray maps → CUT3R tokens F [N, T, De], positions [N, T, 2] and prior
    tokens Z [N, g², Db], all constants."""
    feat, pos = model.encode(img)
    ray_feat, ray_pos = model.ray_encoder(ray_map)
    feat = _where(img_mask, feat, model.masked_img_token[...])
    ray_part = _where(ray_mask, ray_feat.astype(feat.dtype), model.masked_ray_map_token[...])
    feat = feat + jnp.where(ray_mask.any(), ray_part, jnp.zeros_like(ray_part))
    pos = jnp.where(img_mask[:, None, None], pos, jnp.where(ray_mask[:, None, None], ray_pos, 0))
    z = model.prior_tokens(img).astype(jnp.float32)
    z = _where(img_mask, z, model.mhmr_masked_img_token[...])
    return jax.lax.stop_gradient((feat, pos, z))


def slot_prompts(model: Human3r, feat, pos, z, cells, slot_mask, hw):
    """Prompt tokens of the M slots from the GT head cells. cells, slot_mask [N, M] →
    (prompts [N, M, Dd], positions [N, M, 2], prior tokens of the slots [N, M, Db])."""
    hc = model.hcfg
    grid = hc.dino.grid(hc.img_res)
    z_h = jnp.take_along_axis(z, cells[..., None], axis=1)
    loc = jax.lax.stop_gradient(_where(slot_mask, model.human.locate(z_h, cells, grid), jnp.zeros(())))
    c_h, pos_h = model.human.head_tokens(feat, pos, loc, hc.img_res, hw, hc.cut3r.patch_size)
    c_h = _where(slot_mask, c_h, model.masked_smpl_token[...])
    pos_h = jnp.where(slot_mask[..., None], pos_h, 0)
    z_h = _where(slot_mask, z_h, model.mhmr_masked_smpl_token[...])
    fuse_in = jax.lax.stop_gradient(jnp.concatenate([z_h, c_h.astype(z_h.dtype)], axis=-1))
    return model.human.mlp_fuse(fuse_in), pos_h, z_h


def train_forward(model: Human3r, batch, tgt, remat: bool = False):
    """batch (pipeline schema, [B, V, ...]) and targets → predictions [B, V, ...]: the CUT3R outputs,
    `smpl_rotmat` [B, V, M, 53, 3, 3], `smpl_shape`, `smpl_expression` [B, V, M, 10],
    `smpl_transl` [B, V, M, 3], `smpl_scores` [B, V, g, g] (before NMS), `msk` [B, V, R, R, 1]."""
    hc = model.hcfg
    b, v, h, w, _ = batch["img"].shape
    grid = hc.dino.grid(hc.img_res)
    flat = lambda x: x.reshape((b * v,) + x.shape[2:])
    img_mask, ray_mask = flat(batch["img_mask"]), flat(batch["ray_mask"])
    feat, pos, z = encode_views(model, flat(batch["img"]), flat(batch["ray_map"]), img_mask, ray_mask)
    scores = jax.lax.stop_gradient(squeeze_score(model.human.mlp_classif(z)[..., 0])).reshape(b, v, grid, grid)
    out_all = {"smpl_scores": scores}
    if hc.msk_head:
        out_all["msk"] = model.human.mask(z, grid).reshape((b, v) + (hc.img_res, hc.img_res, 1))
    prompts, pos_h, z_h = slot_prompts(model, feat, pos, z, flat(tgt["smpl_cell"]), flat(tgt["smpl_mask"]), (h, w))

    views_first = lambda x: jnp.swapaxes(x.reshape((b, v) + x.shape[1:]), 0, 1)  # [N, ...] → [V, B, ...]
    xs = tuple(views_first(x) for x in (feat, pos, prompts, pos_h, z_h, img_mask))

    def view_step(carry, x):
        feat_i, pos_i, e_i, pe_i, zh_i, mask_i = x
        out, new_state, new_mem, gate = model.decode(carry, feat_i, pos_i, (h, w), TRAIN_STEP, extra=(e_i, pe_i, None))
        x_h = out.pop("extra_tokens").astype(jnp.float32)
        out.update(model.human.smpl(x_h, zh_i))
        frame = Frame(img=None, update=mask_i, reset=jnp.zeros_like(mask_i))
        return model.update(carry, frame, new_state, new_mem, gate, TRAIN_STEP), out

    if remat:
        view_step = jax.checkpoint(view_step)
    _, outs = jax.lax.scan(view_step, Cut3r.init_carry(model, b), xs)
    outs = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), outs)  # [V, B, ...] → [B, V, ...]
    return {**outs, **out_all}
