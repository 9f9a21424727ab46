"""Where our CUT3R step is slower or faster than the official one: each module alone, both in one process.

    python bench/compare_modules.py --against-torch cut3r=CUT3R_CHECKOUT          # CUT3R 512 DPT at 512x288
    python bench/compare_modules.py --preset cut3r_224_linear_4 --size 224x224 --against-torch cut3r=PATH

The official model (bench/torch_reference.py: built from the checkout with random weights, its run-time
stand-ins) runs two frames of its own online loop while the calls of its modules are recorded; the second
frame's calls (so the pose memory is read) are then replayed alone, each `--repeats` times. Ours runs the
same modules, jitted one by one, on inputs of the same shapes. Modules: the encoder (patch embedding, blocks,
norm), the pose memory (read and write), the decoders (embedding and all blocks), one state-decoder and one
image-decoder block, the head with all outputs and, for DPT heads, each DPT. Prints ms per call (median) and
the ratio (> 1: ours faster); writes the figures as JSON.

Both run in this process with the CLI's allocator policy (human3r_jax/allocator.py) and all threads, so a
module's figures compare, but their sum is not a step time: `bench/bench.py --against-torch` times whole steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from options import count, frame_size, json_path
from torch_reference import OPTION, PRESETS, OfficialCodeError, check_presets, parse_sources

from human3r_jax.allocator import retain_freed_memory

MODULES = (
    "encoder",
    "pose memory",
    "decoders",
    "state block",
    "image block",
    "head",
    "dpt_self",
    "dpt_cross",
    "dpt_rgb",
)


def median_ms(call, repeats: int) -> float:
    call()  # warm-up (compilation, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def official_calls(preset: str, imgs: list[np.ndarray], checkout: Path, seed: int) -> dict:
    """Module name → a call replaying what the official loop passed it on the second frame."""
    import torch
    import torch_reference as tr

    tr.install_stand_ins(checkout, None)
    with tempfile.TemporaryDirectory() as tmp:
        model = tr.build(preset, seed, Path(tmp))
    seen = {}

    def record(name, fn):
        def wrapper(*args, **kwargs):
            seen[name] = (fn, args, kwargs)
            return fn(*args, **kwargs)

        return wrapper

    for name, method in (("encoder", "_encode_image"), ("decoders", "_decoder")):
        setattr(model, method, record(name, getattr(model, method)))
    pr = model.pose_retriever
    pr.inquire, pr.update_mem = record("read", pr.inquire), record("write", pr.update_mem)
    modules = {
        "state block": model.dec_blocks_state[0],
        "image block": model.dec_blocks[0],
        "head": model.downstream_head,
    }
    modules.update({n: getattr(model.downstream_head, n) for n in MODULES[-3:] if hasattr(model.downstream_head, n)})
    for name, mod in modules.items():
        mod.forward = record(name, mod.forward)
    tr.time_loop(model, tr.make_views(imgs, None), "cut3r")

    def replay(*names):
        def call():
            with torch.inference_mode():
                for n in names:
                    fn, args, kwargs = seen[n]
                    fn(*args, **kwargs)

        return call

    calls = {n: replay(n) for n in seen if n not in ("read", "write")}
    calls["pose memory"] = replay("read", "write")
    return calls


def our_calls(preset: str, imgs: list[np.ndarray], seed: int) -> dict:
    """Module name → a call of our jitted module on inputs of the official shapes."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from human3r_jax import checkpoint as ckpt
    from human3r_jax.config import preset as model_preset

    graphdef, params = ckpt.random_model(model_preset(preset), seed)
    model = nnx.merge(graphdef, params)

    def jitted(fn):
        f = jax.jit(lambda p, *a: fn(nnx.merge(graphdef, p), *a))
        return lambda *a: jax.block_until_ready(f(params, *a))

    img = jnp.asarray(imgs[1])
    h, w = img.shape[1:3]
    grid = (h // model.cfg.patch_size, w // model.cfg.patch_size)
    la, lb = model.cfg.dec_hooks
    sp = jnp.asarray(model.state_positions())[None]

    def decoders(m, state, feat, x0, xp):
        x = jnp.concatenate([x0, m.decoder.embed(feat)], axis=1)
        return x, m.decoder(state, sp, x, xp, None, logits=False)[1]

    def pose_memory(m, g, mem, pose):
        return m.pose_retriever.read(g, mem), m.pose_retriever.write(mem, g, pose)

    encode, memory, decode = jitted(lambda m, i: m.encode(i)), jitted(pose_memory), jitted(decoders)
    carry = model.init_carry(1)
    feat, pos = encode(img)  # the inputs of the later modules, from the earlier ones
    n = feat.shape[1]
    g = feat.mean(axis=1, keepdims=True)
    pose_q, _ = memory(g, carry.mem, jnp.zeros((1, 1, model.cfg.dec_embed_dim)))
    xp = jnp.concatenate([-jnp.ones((1, 1, 2), pos.dtype), pos], axis=1)
    x, xs = decode(carry.state, feat, pose_q, xp)
    head_in = (feat, xs[la - 1][:, 1 : 1 + n], xs[lb - 1][:, 1 : 1 + n], xs[-1], pos)
    hooks = [feat, xs[la - 1][:, 1:], xs[lb - 1][:, 1:], xs[-1][:, 1:]]
    state_block = jitted(lambda m, s, x, xp: m.decoder.state_blocks[0](s, x, sp, xp)[0])
    image_block = jitted(lambda m, x, s, xp: m.decoder.img_blocks[0](x, s, xp, sp)[0])
    head = jitted(lambda m, *a: m.head(*a, grid, rgb=True, cross=True))
    calls = {
        "encoder": lambda: encode(img),
        "pose memory": lambda: memory(g, carry.mem, xs[-1][:, :1]),
        "decoders": lambda: decode(carry.state, feat, pose_q, xp),
        "state block": lambda: state_block(carry.state, x, xp),
        "image block": lambda: image_block(x, carry.state, xp),
        "head": lambda: head(*head_in),
    }
    for name in MODULES[-3:]:
        if getattr(model.head, name, None) is not None:
            dpt = jitted(lambda m, hk, name=name: getattr(m.head, name)(hk, grid))
            calls[name] = lambda dpt=dpt: dpt(hooks)
    return calls


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cut3r_512_dpt_4_64", choices=[k for k, v in PRESETS.items() if v[0] == "cut3r"])
    p.add_argument("--size", default="512x288", type=frame_size, help="WxH (multiples of 16)")
    p.add_argument("--repeats", type=count, default=5, help="timed calls per module")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(OPTION, nargs="+", metavar="NAME=PATH", required=True, help="cut3r=CUT3R_CHECKOUT")
    p.add_argument("--json", type=json_path, default=Path("bench/results/modules.json"))
    args = p.parse_args(argv)
    try:
        sources = parse_sources(args.against_torch)
        check_presets(sources, [args.preset])
    except OfficialCodeError as e:
        print(e, file=sys.stderr)
        return 2
    w, h = (int(v) for v in args.size.split("x"))
    retain_freed_memory()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(args.seed)
    imgs = [rng.uniform(-1, 1, (1, h, w, 3)).astype(np.float32) for _ in range(2)]
    theirs = official_calls(args.preset, imgs, sources[PRESETS[args.preset][0]], args.seed)
    ours = our_calls(args.preset, imgs, args.seed)
    rows = []
    print(f"{args.preset} {args.size}, ms per call (median of {args.repeats}), {torch.get_num_threads()} threads")
    print(f"{'module':14s} {'official':>9s} {'ours':>9s} {'ratio':>6s}")
    for name in MODULES:
        if name in ours and name in theirs:
            t, o = median_ms(theirs[name], args.repeats), median_ms(ours[name], args.repeats)
            rows.append({"module": name, "official_ms": round(t, 2), "ours_ms": round(o, 2), "ratio": round(t / o, 3)})
            print(f"{name:14s} {t:9.1f} {o:9.1f} {t / o:5.2f}×", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"preset": args.preset, "size": args.size, "modules": rows}, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
