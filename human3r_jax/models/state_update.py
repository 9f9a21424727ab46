"""State-update rules: how much of the decoder's candidate state each state token takes per frame.

A rule is a pure function of one frame's `Context`:

    rule(ctx) -> w [B, S] float32 in [0, 1]   (anything broadcastable to [B, S], e.g. [B, 1], is accepted)

and the step applies  s ← m·w·ŝ + (1 − m·w)·s  per state token, with m [B] the frame's `update`
flag; resets happen afterwards, outside the rule (`Cut3r.update`). The pose memory keeps its plain
update. A rule is part of `StepOptions`, a jit static argument, so it must be hashable and compare
by value: a module-level function, or a frozen dataclass of plain numbers with `__call__` (a new
value recompiles the step). A rule that reads `ctx.logits` says so with `needs_logits = True` (the
`needs_logits` decorator for a function, a class attribute for a dataclass); otherwise the
decoder does not compute them and `ctx.logits` is None.

Built-in rules:
    cut3r: w = 1                                    (CUT3R: s ← ŝ on every updating frame)
    ttt3r: w = 1 if first else σ(logits)            (TTT3R, Human3R `--use_ttt3r`)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Context(NamedTuple):
    state: jax.Array  # [B, S, D] the state before this frame
    candidate: jax.Array  # [B, S, D] the decoders' new state ŝ (same dtype as the state)
    logits: jax.Array | None  # [B, S] state→image cross-attention logits, mean over layers, heads and
    # valid keys (float32); None unless the rule declares `needs_logits`
    first: jax.Array  # [B] bool: first frame of a segment (t == 0 or right after a reset)
    t: jax.Array  # [B] int32: frames seen before this one (resets do not restart it)


Rule = Callable[[Context], jax.Array]


def needs_logits(rule: Rule) -> Rule:
    """Decorator: the rule reads `ctx.logits` (the decoder then computes them)."""
    rule.needs_logits = True
    return rule


def uses_logits(rule: Rule) -> bool:
    return bool(getattr(rule, "needs_logits", False))


def cut3r(ctx: Context) -> jax.Array:
    """w = 1: the candidate replaces the state (CUT3R's update)."""
    return jnp.ones(ctx.state.shape[:2], jnp.float32)


@needs_logits
def ttt3r(ctx: Context) -> jax.Array:
    """w = σ(logits), except 1 on the first frame of a segment, which TTT3R does not gate."""
    return jnp.where(ctx.first[:, None], 1.0, jax.nn.sigmoid(ctx.logits))
