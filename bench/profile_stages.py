"""Where the time of one online step goes, per stage of the model (random weights).

    python bench/profile_stages.py --preset human3r_896L                  # 512x288, all heads, float32
    python bench/profile_stages.py --preset cut3r_512_dpt_4_64 --heads lean --json bench/results/stages.json

The step is compiled once and run under the JAX profiler; every executed XLA operation is charged to the stage
whose `jax.named_scope` it was traced in (encoder, dinov2, human_prompts, decoders, pose_memory, heads,
smplx_head, tracking: set in models/cut3r.py and models/human3r.py), read from the compiled module's metadata.
Prints per stage the milliseconds per frame (mean over `--frames` profiled steps) and its share of the sum of
operation times; "other" is what no stage claims (input checks, the state update, glue).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from options import count, frame_size, json_path

from human3r_jax.allocator import retain_freed_memory
from human3r_jax.config import CUT3R_PRESETS, HUMAN3R_PRESETS

PRESET_NAMES = sorted(CUT3R_PRESETS) + sorted(HUMAN3R_PRESETS)

STAGES = ("encoder", "dinov2", "human_prompts", "decoders", "pose_memory", "heads", "smplx_head", "tracking")
# `%name = type opcode(...), ... metadata={op_name="jit(step)/.../stage/..." ...}` in the compiled module text.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*? ([\w\-]+)\(.*?op_name=\"([^\"]*)\"")
_CONTAINERS = {"while", "call", "conditional"}  # their time is their body's, charged there


def instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
    """Compiled-module instruction name → (stage, op_name path): the stage is the first stage name in the path,
    else "other"."""
    out = {}
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.match(line)
        if not m or m.group(2) in _CONTAINERS:
            continue
        parts = m.group(3).split("/")
        out[m.group(1)] = (next((p for p in parts if p in STAGES), "other"), m.group(3))
    return out


def trace_op_times(trace_dir: Path, names: set[str]) -> collections.Counter:
    """Total microseconds per instruction name over the trace's complete events ("ph": "X")."""
    path = next(trace_dir.rglob("*.trace.json.gz"), None) or next(trace_dir.rglob("*.json.gz"))
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    total = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in names:
            total[e["name"]] += e.get("dur", 0)
    return total


def profile(preset: str, size: str, heads: str, dtype: str, frames: int, seed: int, top: int = 0) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from human3r_jax import checkpoint as ckpt
    from human3r_jax import runtime
    from human3r_jax.config import preset as model_preset
    from human3r_jax.models.cut3r import StepOptions, make_frame

    w, h = (int(v) for v in size.split("x"))
    graphdef, params = ckpt.random_model(model_preset(preset), seed, dtype=None if dtype == "float32" else jnp.bfloat16)
    opts = StepOptions(rgb=heads == "full", cross=heads == "full")
    img = jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (1, h, w, 3)).astype(np.float32))
    carry = runtime.init_carry(graphdef, params, 1)
    compiled = runtime.step.lower(graphdef, params, carry, make_frame(img), opts).compile()
    ops = instructions(compiled.as_text())
    jax.block_until_ready(compiled(params, carry, make_frame(img)))  # warm: parameters in place
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(frames):
                carry, out = compiled(params, carry, make_frame(img))
                jax.block_until_ready((carry, out))
        wall = (time.perf_counter() - t0) / frames
        times = trace_op_times(Path(tmp), set(ops))
    per_stage = collections.Counter()
    for name, us in times.items():
        per_stage[ops[name][0]] += us / frames / 1e3
    total = sum(per_stage.values())
    return {
        "preset": preset,
        "size": size,
        "heads": heads,
        "dtype": dtype,
        "frames": frames,
        "device": str(jax.devices()[0].device_kind),
        "wall_ms_per_frame": wall * 1e3,
        "op_ms_per_frame": total,
        "stages_ms": {k: per_stage[k] for k in (*STAGES, "other") if per_stage[k] > 0},
        "top_ops": [
            {"name": name, "op_name": ops[name][1], "ms": us / frames / 1e3} for name, us in times.most_common(top)
        ],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="human3r_896L", choices=PRESET_NAMES)
    p.add_argument("--size", default="512x288", type=frame_size, help="WxH (multiples of 16)")
    p.add_argument("--heads", default="full", choices=["full", "lean"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--frames", type=count, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=0, help="also list the N most expensive operations")
    p.add_argument("--json", type=json_path, default=Path("bench/results/stages.json"))
    args = p.parse_args(argv)
    retain_freed_memory()  # as the CLI does (human3r_jax/allocator.py)
    res = profile(args.preset, args.size, args.heads, args.dtype, args.frames, args.seed, args.top)
    print(f"{res['preset']} {res['size']} heads={res['heads']} {res['dtype']} on {res['device']}")
    print(f"{'stage':14s} {'ms/frame':>9s} {'share':>6s}")
    for name, ms in sorted(res["stages_ms"].items(), key=lambda kv: -kv[1]):
        print(f"{name:14s} {ms:9.0f} {ms / res['op_ms_per_frame']:6.1%}")
    print(f"{'sum of ops':14s} {res['op_ms_per_frame']:9.0f}   (wall {res['wall_ms_per_frame']:.0f} ms/frame)")
    for op in res["top_ops"]:
        print(f"{op['ms']:9.1f} ms  {op['name']:28s} {op['op_name'][-90:]}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
