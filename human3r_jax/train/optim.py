"""What trains, and how: parameter groups by regex, AdamW with decay on matrices,
warm-up + half-cosine schedule, and the official gradient clipping.

Three groups of parameters (dotted paths of our tree), each named by a list of regexes in the
training config (`trainable_params`, `fixed_params`, `frozen_params`; the official groups are
config.TRAINABLE / FIXED / FROZEN):
  * trainable: updated by AdamW;
  * fixed: gradients flow through them and, as in the official `_is_frozen` parameters, count in the
    clipping norm; not updated;
  * frozen: no gradient at all.
`split_params` puts every parameter in exactly one group and uses every pattern, else ConfigError:
a renamed parameter or a misspelled pattern stops the run instead of freezing something silently.

`mhmr_masked_smpl_token` gets a gradient (exactly zero: it fills empty slots, whose losses are
masked), so AdamW decays it, as torch's does.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax

from human3r_jax.checkpoint import unflatten
from human3r_jax.train.config import FIXED, FROZEN, TRAINABLE, ConfigError

GROUPS = ("trainable_params", "fixed_params", "frozen_params")  # the config fields, in split order


def _compile(group: str, patterns) -> list[re.Pattern]:
    try:
        if isinstance(patterns, str):  # its characters would each be a pattern
            raise TypeError("one string, not a tuple of them")
        return [re.compile(p) for p in patterns]
    except (re.error, TypeError) as e:
        raise ConfigError(f"{group}={patterns!r}: not a tuple of regular expressions ({e})") from None


def _listed(names: list[str], most: int = 5) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def split_params(flat: dict, trainable=TRAINABLE, fixed=FIXED, frozen=FROZEN):
    """{path: array} → (trainable, fixed, frozen) dicts of the same paths; the groups are regexes
    (`re.search`). ConfigError, naming the pattern or the parameter, unless every pattern matches a
    parameter and every parameter matches exactly one group (patterns of one group may overlap)."""
    compiled = [_compile(g, ps) for g, ps in zip(GROUPS, (trainable, fixed, frozen))]
    # A pattern that matches nothing first: its misspelling is the cause of any parameter left over.
    for group, patterns in zip(GROUPS, compiled):
        for p in patterns:
            if not any(p.search(k) for k in flat):
                raise ConfigError(
                    f"{group}: pattern '{p.pattern}' matches no parameter of the model "
                    "(misspelled, or the parameter was renamed)"
                )
    groups = ({}, {}, {})
    uncovered = []
    for k, v in flat.items():
        first = [next((p for p in ps if p.search(k)), None) for ps in compiled]  # each group's first match
        hits = [(g, p) for g, p in enumerate(first) if p is not None]
        if len(hits) > 1:
            named = " and ".join(f"{GROUPS[g]} ('{p.pattern}')" for g, p in hits)
            raise ConfigError(f"parameter {k} is matched by {named}: each parameter belongs to exactly one group")
        if not hits:
            uncovered.append(k)
            continue
        groups[hits[0][0]][k] = v
    if uncovered:
        raise ConfigError(
            f"parameter(s) in no group: {_listed(uncovered)}; add a pattern that matches them to "
            "trainable_params, fixed_params or frozen_params"
        )
    return groups


def decay_mask(flat: dict) -> dict:
    """Weight decay on ≥ 2-D parameters that are not biases (timm's rule, as the official groups);
    nested like the parameters."""
    return unflatten({k: (len(v.shape) >= 2 and not k.endswith(".bias")) for k, v in flat.items()})


def schedule(lr: float, min_lr: float, warmup_steps: int, total_steps: int):
    """lr·k/W for k < W, then min_lr + (lr − min_lr)·½(1 + cos(π (k − W)/(T − W))); k is the
    0-based update index, so the first update has lr 0, as the official per-iteration schedule."""
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, lr, warmup_steps),
            optax.cosine_decay_schedule(lr, max(total_steps - warmup_steps, 1), alpha=min_lr / lr),
        ],
        [warmup_steps],
    )


def make_optimizer(
    trainable: dict, *, lr, min_lr, warmup_steps, total_steps, weight_decay=0.05, b1=0.9, b2=0.95, eps=1e-8
):
    """AdamW over the trainable group (clipping happens before it, see clip_by_global_norm)."""
    return optax.adamw(
        schedule(lr, min_lr, warmup_steps, total_steps),
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        mask=decay_mask(trainable),
    )


def global_norm(*trees) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for t in trees for x in jax.tree.leaves(t)))


def clip_by_global_norm(grads, norm, max_norm: float):
    """torch.nn.utils.clip_grad_norm_: scale by min(1, max_norm / (norm + 1e-6))."""
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)


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
