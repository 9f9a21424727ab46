"""What trains, and how (spec §4.8, §6): parameter groups by regex, AdamW with decay on matrices,
warm-up + half-cosine schedule, and the official gradient clipping.

Three groups of parameters (dotted paths of our tree), matched in order:
  * TRAINABLE: the prompt generator, SMPL-X heads, mask head and the prior's padding token — updated;
  * FIXED: decoders, state/pose tokens, pose memory and the CUT3R heads — gradients flow through
    them and, as in the official `_is_frozen` parameters, count in the clipping norm; not updated;
  * everything else is FROZEN (encoders, DINOv2, detection MLPs, buffers): no gradient at all.

`masked_smpl_token` is FROZEN although the official optimizer lists it: it is only used detached
(token_fuse), so its `.grad` stays None and torch's AdamW skips it (no update, no weight decay).
`mhmr_masked_smpl_token` does get a gradient (exactly zero: it fills empty slots, whose losses are
masked), so AdamW decays it there as here.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax

from human3r_jax.checkpoint import unflatten

TRAINABLE = (
    r"^human\.(mlp_fuse|decpose|decshape|decexpression|deccam|mlp_msk)\.",
    r"^mhmr_masked_smpl_token$",
)
FIXED = (
    r"^decoder\.", r"^state_embed\.", r"^pose_token$", r"^register_tokens$", r"^pose_retriever\.",
    r"^head\.(dpt_self|dpt_cross|dpt_rgb|final_transform|pose_head)\.",
)


def matches(path: str, patterns) -> bool:
    return any(re.search(p, path) for p in patterns)


def split_params(flat: dict):
    """{path: array} → (trainable, fixed, frozen) dicts of the same paths."""
    groups = ({}, {}, {})
    for k, v in flat.items():
        groups[0 if matches(k, TRAINABLE) else 1 if matches(k, FIXED) else 2][k] = v
    return groups


def decay_mask(flat: dict) -> dict:
    """Weight decay on ≥ 2-D parameters that are not biases (timm's rule, as the official groups);
    nested like the parameters."""
    return unflatten({k: (len(v.shape) >= 2 and not k.endswith(".bias")) for k, v in flat.items()})


def schedule(lr: float, min_lr: float, warmup_steps: int, total_steps: int):
    """lr·k/W for k < W, then min_lr + (lr − min_lr)·½(1 + cos(π (k − W)/(T − W))); k is the
    0-based update index, so the first update has lr 0, as the official per-iteration schedule."""
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup_steps),
         optax.cosine_decay_schedule(lr, max(total_steps - warmup_steps, 1), alpha=min_lr / lr)],
        [warmup_steps])


def make_optimizer(trainable: dict, *, lr, min_lr, warmup_steps, total_steps, weight_decay=0.05,
                   b1=0.9, b2=0.95, eps=1e-8):
    """AdamW over the trainable group (clipping happens before it, see clip_by_global_norm)."""
    return optax.adamw(schedule(lr, min_lr, warmup_steps, total_steps), b1=b1, b2=b2, eps=eps,
                       weight_decay=weight_decay, mask=decay_mask(trainable))


def global_norm(*trees) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for t in trees for x in jax.tree.leaves(t)))


def clip_by_global_norm(grads, norm, max_norm: float):
    """torch.nn.utils.clip_grad_norm_: scale by min(1, max_norm / (norm + 1e-6))."""
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)


FIXED_GRADS = ("accumulate", "fresh", "ignore")


def clip_gradients(g_train, g_fixed, carried, mode: str, max_norm: float):
    """The official clipping of one step. → (clipped trainable gradients, new carried fixed gradients,
    the norm before clipping).

    mode "accumulate" is the original's behaviour: the FIXED parameters keep `requires_grad`, sit
    outside the optimizer, and nothing zeroes their `.grad`, so each step adds to it, the clip
    scales it in place with the rest, and it counts in every later norm:
    G_t = c_t (G_{t-1} + g_t), c_t = min(1, max_norm / (‖(g_train, G_{t-1} + g_t)‖ + 1e-6)).
    "fresh" counts only this step's fixed gradients; "ignore" leaves them out (g_fixed None).
    """
    if mode == "accumulate":
        g_fixed = jax.tree.map(jnp.add, carried, g_fixed)
    norm = global_norm(g_train, g_fixed)  # None has no leaves
    if mode == "accumulate":
        carried = clip_by_global_norm(g_fixed, norm, max_norm)
    return clip_by_global_norm(g_train, norm, max_norm), carried, norm
