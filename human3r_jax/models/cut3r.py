"""CUT3R: the recurrent reconstruction model and its one-frame step.

`Cut3r.step(carry, frame, opts)` is pure: everything that crosses frames is in `Carry`.
State updates follow the official online loops: `s ← m·w·ŝ + (1−m·w)·s` with m the frame's update
flag and w [B, S] from the state-update rule in `StepOptions` (models/state_update.py: CUT3R's w = 1,
TTT3R's β per state token from the state→image cross-attention, or a rule of your own), then resets,
which put the initial state and pose memory back after the reset frame's own outputs are computed.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from human3r_jax.config import Cut3rConfig
from human3r_jax.models import state_update as su
from human3r_jax.models.decoder import Decoders
from human3r_jax.models.encoder import image_encoder, ray_map_encoder
from human3r_jax.models.heads import make_head
from human3r_jax.models.memory import PoseRetriever
from human3r_jax.models.tracking import TrackState


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """Static choices of one step (part of the jit cache key).

    rgb / cross: compute the rgb and cross-view heads (on for parity, off to save time).
    state_update: the state-update rule `rule(ctx) -> w [B, S]` (models/state_update.py): `su.cut3r`
      (plain update), `su.ttt3r` (Human3R `--use_ttt3r`) or your own (hashable).
    pose_token_after_reset: the frame after a reset starts from the learned pose token, as in
      Human3R's online loop; False reads the (reset) pose memory, as CUT3R's `forward_recurrent`.
    taps: also return stage-wise intermediates (for parity checks).
    """

    rgb: bool = True
    cross: bool = True
    state_update: su.Rule = su.cut3r
    pose_token_after_reset: bool = True
    taps: bool = False


class Frame(NamedTuple):
    img: jax.Array  # [B, H, W, 3] float, normalised to [-1, 1]
    update: jax.Array  # [B] bool: let this frame update the state
    reset: jax.Array  # [B] bool: reset the state after this frame


class Carry(NamedTuple):
    state: jax.Array  # [B, S, D]
    mem: jax.Array  # [B, M, 2D]
    state_init: jax.Array  # [B, S, D]
    mem_init: jax.Array  # [B, M, 2D]
    t: jax.Array  # [B] int32: frames seen
    after_reset: jax.Array  # [B] bool: the previous frame reset the state
    tracks: TrackState | None = None  # Human3R: the track memory (batched on axis 0)


def make_frame(img, update=None, reset=None) -> Frame:
    img = jnp.asarray(img)
    b = img.shape[0]
    update = jnp.ones((b,), bool) if update is None else jnp.asarray(update, bool).reshape(b)
    reset = jnp.zeros((b,), bool) if reset is None else jnp.asarray(reset, bool).reshape(b)
    return Frame(img, update, reset)


def check_image(img) -> None:
    """An image entering the model: [B, H, W, 3] float. chex checks shapes at trace time (free under jit)."""
    chex.assert_rank(img, 4, custom_message="frame.img: expected one frame per batch element, [B, H, W, 3]")
    chex.assert_shape(img, (None, None, None, 3), custom_message="frame.img: expected RGB channels last, [B, H, W, 3]")
    chex.assert_type(img, float, custom_message="frame.img: expected a float image normalised to [-1, 1]")


def check_flags(carry: Carry, frame: Frame) -> None:
    """The frame's update/reset flags are [B] bool with the carry's batch size B, and every carry leaf
    has that batch axis first."""
    b = carry.state.shape[0]
    chex.assert_tree_shape_prefix(carry, (b,), custom_message=f"carry: every leaf must lead with the batch axis B={b}")
    for name in ("update", "reset"):
        flag = getattr(frame, name)
        chex.assert_shape(flag, (b,), custom_message=f"frame.{name}: expected [B={b}] (the carry's batch size)")
        chex.assert_type(flag, bool, custom_message=f"frame.{name}: expected bool flags (make_frame converts)")


def check_frame(carry: Carry, frame: Frame) -> None:
    """A frame entering the step (see `Frame`), against the carry's batch size."""
    check_image(frame.img)
    chex.assert_axis_dimension(
        frame.img, 0, carry.state.shape[0], custom_message="frame.img: its batch size differs from the carry's"
    )
    check_flags(carry, frame)


def _blend(new, old, m):
    """new·m + old·(1−m) with m broadcast over tokens and channels, in the official order."""
    m = m.astype(new.dtype).reshape(m.shape + (1,) * (new.ndim - m.ndim))
    return new * m + old * (1 - m)


class Cut3r(nnx.Module):
    def __init__(self, cfg: Cut3rConfig, *, rngs: nnx.Rngs, dtype=None):
        self.cfg = cfg
        de, dd = cfg.enc_embed_dim, cfg.dec_embed_dim
        normal = nnx.initializers.normal(0.02)
        self.encoder = image_encoder(cfg, rngs, dtype)
        self.ray_encoder = ray_map_encoder(cfg, rngs, dtype)
        self.masked_img_token = nnx.Param(normal(rngs.params(), (1, de)))
        self.masked_ray_map_token = nnx.Param(normal(rngs.params(), (1, de)))
        self.register_tokens = nnx.Param(nnx.initializers.normal(1.0)(rngs.params(), (cfg.state_size, de)))
        self.state_embed = nnx.Linear(de, dd, dtype=dtype, rngs=rngs)  # decoder_embed_state
        self.pose_token = nnx.Param(normal(rngs.params(), (1, 1, dd)))
        self.decoder = Decoders(cfg, rngs=rngs, dtype=dtype)
        self.pose_retriever = PoseRetriever(cfg, rngs=rngs, dtype=dtype)
        self.head = make_head(cfg, rngs)

    # ------------------------------------------------------------ state

    def state_positions(self) -> np.ndarray:
        """RoPE positions of the state tokens [S, 2]: a grid of width floor(√S) rounded up to even."""
        s = self.cfg.state_size
        if self.cfg.state_pe == "1d":
            return np.stack([np.arange(s)] * 2, axis=-1).astype(np.int32)
        w = self.cfg.state_grid_width
        i = np.arange(s)
        return np.stack([i // w, i % w], axis=-1).astype(np.int32)

    def init_carry(self, batch: int = 1) -> Carry:
        # The carry stays float32 whatever the compute dtype: it accumulates over the whole video.
        state = self.state_embed(self.register_tokens[...])[None].astype(jnp.float32)
        state = jnp.broadcast_to(state, (batch,) + state.shape[1:])
        mem = self.pose_retriever.mem[...].astype(jnp.float32)
        mem = jnp.broadcast_to(mem, (batch,) + mem.shape[1:])
        return Carry(state, mem, state, mem, jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), bool))

    # ------------------------------------------------------------ one frame

    def encode(self, img, taps=None):
        """img [B, H, W, 3] -> (F [B, N, De], pos [B, N, 2])."""
        check_image(img)  # also Human3r's step and the training forward enter here
        with jax.named_scope("encoder"):  # stage names: bench/profile_stages.py reads them from the compiled step
            feat, pos = self.encoder(img, taps)
        if taps is not None:
            taps.update(enc_out=feat, patch_pos=pos)
        return feat, pos

    def pose_query(self, carry: Carry, g, opts: StepOptions):
        """The pose token at the first frame (and after a reset in Human3R's loop), else a memory read."""
        fresh = carry.t == 0
        if opts.pose_token_after_reset:
            fresh = fresh | carry.after_reset
        read = self.pose_retriever.read(g, carry.mem)
        token = jnp.broadcast_to(self.pose_token[...], read.shape).astype(read.dtype)
        return jnp.where(fresh[:, None, None], token, read)

    def step(self, carry: Carry, frame: Frame, opts: StepOptions = StepOptions()):
        """One online step. Returns (carry', outputs); outputs['taps'] holds intermediates if asked."""
        check_frame(carry, frame)
        taps = {} if opts.taps else None
        feat, pos = self.encode(frame.img, taps)
        out, new_state, new_mem, gate = self.decode(carry, feat, pos, frame.img.shape[1:3], opts, taps=taps)
        carry = self.update(carry, frame, new_state, new_mem, gate, opts, taps)
        if taps is not None:
            taps.update(state_out=carry.state, mem_out=carry.mem)
            out["taps"] = taps
        return carry, out

    def decode(self, carry: Carry, feat, pos, hw, opts: StepOptions, extra=None, taps=None):
        """Decoders, pose memory write and heads for encoded tokens.

        extra: optional (tokens [B, n, D], positions [B, n, 2], valid [B, n]) appended after the
        image tokens (Human3R's human prompts); invalid ones are hidden from attention (valid None:
        all attend, as the official training's padded slots).
        Returns (outputs, candidate state, candidate memory, state→image logits [B, S] or None: only
        computed for a state-update rule that needs them); with `extra`, outputs["extra_tokens"]
        holds their decoder outputs X̂ [B, n, D].
        """
        b, n, _ = feat.shape
        p = self.cfg.patch_size
        grid = (hw[0] // p, hw[1] // p)
        g = feat.mean(axis=1, keepdims=True)
        with jax.named_scope("pose_memory"):
            pose_q = self.pose_query(carry, g, opts)
        x_img = self.decoder.embed(feat)
        pose_pos = -jnp.ones((b, 1, 2), pos.dtype)
        x = jnp.concatenate([pose_q.astype(x_img.dtype), x_img], axis=1)
        x_pos = jnp.concatenate([pose_pos, pos], axis=1)
        x_mask = None
        if extra is not None:
            e_tok, e_pos, e_valid = extra
            x = jnp.concatenate([x, e_tok.astype(x.dtype)], axis=1)
            x_pos = jnp.concatenate([x_pos, e_pos.astype(pos.dtype)], axis=1)
            if e_valid is not None:
                x_mask = jnp.concatenate([jnp.ones((b, 1 + n), bool), e_valid], axis=1)
        grid_pos = self.state_positions()
        state_pos = jnp.broadcast_to(jnp.asarray(grid_pos), (b,) + grid_pos.shape)
        if taps is not None:
            taps.update(
                state_in=carry.state,
                mem_in=carry.mem,
                pose_query=pose_q[:, 0],
                dec_embed_img=x_img,
                dec_in_tokens=x,
                dec_in_pos=x_pos,
                state_pos=state_pos,
            )
        with jax.named_scope("decoders"):
            new_state, xs, logits = self.decoder(
                carry.state, state_pos, x, x_pos, x_mask, logits=su.uses_logits(opts.state_update), taps=taps
            )
        x_final = xs[-1]
        with jax.named_scope("pose_memory"):
            new_mem = self.pose_retriever.write(carry.mem, g, x_final[:, :1])
        la, lb = self.cfg.dec_hooks
        f32 = lambda a: a.astype(jnp.float32)
        with jax.named_scope("heads"):
            out = self.head(
                f32(feat),
                f32(xs[la - 1][:, 1 : 1 + n]),
                f32(xs[lb - 1][:, 1 : 1 + n]),
                f32(x_final[:, : 1 + n]),
                pos,
                grid,
                rgb=opts.rgb,
                cross=opts.cross,
                taps=taps,
            )
        if taps is not None:
            taps.update(dec_img_final=x_final, state_candidate=new_state, mem_candidate=new_mem)
        if extra is not None:
            out["extra_tokens"] = x_final[:, 1 + n :]
        return out, new_state, new_mem, logits

    def update(self, carry: Carry, frame: Frame, new_state, new_mem, logits, opts: StepOptions, taps=None) -> Carry:
        """State update by the options' rule under the frame's update flag, plain memory update, then
        resets. logits: the decoder's state→image logits [B, S] (None if the rule does not read them)."""
        check_flags(carry, frame)  # also Human3r's step and the training forward pass their flags here
        new_state, new_mem = new_state.astype(carry.state.dtype), new_mem.astype(carry.mem.dtype)
        m = frame.update.astype(jnp.float32)
        rule = opts.state_update
        first = (carry.t == 0) | carry.after_reset  # a segment's first frame (TTT3R does not gate it)
        ctx = su.Context(carry.state, new_state, logits, first, carry.t)
        w = jnp.broadcast_to(jnp.asarray(rule(ctx), jnp.float32), carry.state.shape[:2])
        if taps is not None:
            taps["state_update_weight"] = w
            if rule is su.ttt3r:  # the names of TTT3R's gate in the parity fixtures
                taps.update(ttt3r_beta=w, ttt3r_gate_applied=~first)
        state = _blend(new_state, carry.state, m[:, None] * w)
        mem = _blend(new_mem, carry.mem, m)
        state = _blend(carry.state_init, state, frame.reset)
        mem = _blend(carry.mem_init, mem, frame.reset)
        return carry._replace(state=state, mem=mem, t=carry.t + 1, after_reset=frame.reset)
