"""A state-update rule of your own, run through `reconstruct` and through the jitted `lax.scan`.

    python examples/constant_beta.py [--beta 0.5] [--frames 3] [--out DIR]

The rule: every state token takes the same fraction β of its candidate on every frame,
s ← β·ŝ + (1 − β)·s (β = 1 is the built-in cut3r rule; β = 0 never moves the state from its
initial value). It runs a tiny Human3R with random weights on samples/sample.mp4: the numbers are
meaningless, the plumbing is what is shown.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from human3r_jax import runtime
from human3r_jax.data.images import preprocess
from human3r_jax.data.video import FrameSource
from human3r_jax.models import state_update as su
from human3r_jax.models.cut3r import Frame, StepOptions
from human3r_jax.reconstruct import Settings, load_model, reconstruct

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample.mp4"


# Frozen dataclass: hashable and compared by value, as a jit static argument must be (a new β compiles anew).
@dataclasses.dataclass(frozen=True)
class ConstantBeta:
    """w = β [B, S] on every frame, the first one included. It does not read ctx.logits, so no
    `needs_logits` attribute: the decoder skips computing them."""

    beta: float = 0.5

    def __call__(self, ctx: su.Context):
        return jnp.full(ctx.state.shape[:2], self.beta, jnp.float32)


def scan(model, rule, frames: int = 3, size: int = 512):
    """The first `frames` frames of the sample clip through `runtime.run_sequence` (one jitted
    `lax.scan`) with `rule`. Returns (the last carry, outputs stacked [T, 1, …] with the taps)."""
    imgs = np.stack([preprocess(r.image, size) for r in FrameSource(SAMPLE, max_frames=frames)])
    t = len(imgs)
    views = Frame(jnp.asarray(imgs[:, None]), jnp.ones((t, 1), bool), jnp.zeros((t, 1), bool))
    opts = StepOptions(rgb=False, cross=False, state_update=rule, taps=True)
    carry = runtime.init_carry(model.graphdef, model.params, 1)
    return runtime.run_sequence(model.graphdef, model.params, carry, views, opts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    args = ap.parse_args(argv)
    rule = ConstantBeta(args.beta)
    model = load_model(random_weights="human3r_tiny")

    # 1. reconstruct: Settings.state_update takes the rule (it overrides the --ttt3r boolean).
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or Path(tmp) / "out"
        out = reconstruct(
            [SAMPLE], out_dir, model, Settings(max_frames=args.frames, state_update=rule), progress=False
        )[0]
        summary = np.load(out / "reconstruction.npz")
        print(
            f"reconstruct with {rule}: {len(summary['c2w'])} frames written to {out}"
            + ("" if args.out else " (a temporary folder, removed on exit)")
        )
        print("  camera positions:", np.round(summary["c2w"][:, :3, 3].astype(float), 4).tolist())

    # 2. the jitted scan, the rule against the built-in ones: how far the state moved from its initial value.
    init = np.asarray(runtime.init_carry(model.graphdef, model.params, 1).state)
    for name, r in (("cut3r", su.cut3r), ("ttt3r", su.ttt3r), (f"beta={args.beta:g}", rule)):
        carry, out = scan(model, r, args.frames)
        w = np.asarray(out["taps"]["state_update_weight"])[:, 0]
        moved = float(np.abs(np.asarray(carry.state) - init).mean())
        print(
            f"scan, {name:10s}: mean weight per frame {np.round(w.mean(-1).astype(float), 3).tolist()}, "
            f"mean |state − initial| {moved:.4f}"
        )


if __name__ == "__main__":
    main()
