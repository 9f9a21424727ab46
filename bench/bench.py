"""Per-frame time and peak memory of the jitted online step (random weights).

    python bench/bench.py                                   # CUT3R 512 DPT at 512x288, float32
    python bench/bench.py --preset cut3r_224_linear_4 --size 224x224
    python bench/bench.py --heads full lean --dtype float32 bfloat16 --json bench/results/cpu.json

Each configuration runs in a fresh subprocess (so its peak RSS is its own): the model is built with
random weights, the step is compiled (timed separately), then `--frames` steps are timed (median).
`full` computes all heads as the official demo does (self, cross, rgb); `lean` only the self-view
points, confidence and pose (what reconstruction needs). Reference figures for the official PyTorch
model, recorded on the project's 2-core development CPU (`REFERENCE_CPU`), are printed as ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

# Official PyTorch, float32, 2 threads, 512x288, recorded on that CPU: (s/frame, peak RSS GB)
REFERENCE_CPU = {"cut3r_512_dpt_4_64": (4.69, 3.9), "human3r_672S": (5.77, 5.0), "human3r_896L": (19.75, 6.3)}
# The same machine's PyTorch time for 24 ViT-L blocks on 600 tokens. Timing that
# workload here, in the same run, tells how much faster or slower this machine is than the one the
# reference was recorded on: reference here ≈ recorded × (torch blocks here / 1.49 s).
REFERENCE_TORCH_VITL24_S = 1.49


def torch_vitl24_seconds(tokens: int = 600, repeats: int = 3) -> float | None:
    """PyTorch forward of 24 pre-LN ViT-L blocks (1024 wide, 16 heads, GELU MLP 4096), float32."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    layer = lambda: torch.nn.TransformerEncoderLayer(
        1024, 16, 4096, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    net = torch.nn.Sequential(*[layer() for _ in range(24)]).eval()
    x = torch.randn(1, tokens, 1024)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    return float(sorted(times[1:])[len(times[1:]) // 2])


def run_one(preset: str, size: str, heads: str, dtype: str, frames: int, seed: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from human3r_jax import checkpoint as ckpt
    from human3r_jax import runtime
    from human3r_jax.config import preset as model_preset
    from human3r_jax.models.cut3r import StepOptions, make_frame

    w, h = (int(v) for v in size.split("x"))
    cfg = model_preset(preset)
    t0 = time.perf_counter()
    graphdef, params = ckpt.random_model(cfg, seed, dtype=jnp.dtype(dtype) if dtype != "float32" else None)
    build_s = time.perf_counter() - t0
    opts = StepOptions(rgb=heads == "full", cross=heads == "full")
    rng = np.random.default_rng(seed)
    imgs = [jnp.asarray(rng.uniform(-1, 1, (1, h, w, 3)).astype(np.float32)) for _ in range(frames + 1)]
    carry = runtime.init_carry(graphdef, params, 1)
    t0 = time.perf_counter()
    compiled = runtime.step.lower(graphdef, params, carry, make_frame(imgs[0]), opts).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    times = []
    for img in imgs:
        t0 = time.perf_counter()
        carry, out = compiled(params, carry, make_frame(img))
        jax.block_until_ready((carry, out))
        times.append(time.perf_counter() - t0)
    times = times[1:]  # the first call also moves the parameters in place
    return {
        "preset": preset,
        "size": size,
        "heads": heads,
        "dtype": dtype,
        "frames": frames,
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "build_s": round(build_s, 2),
        "compile_s": round(compile_s, 2),
        "s_per_frame": float(np.median(times)),
        "s_per_frame_min": float(np.min(times)),
        "fps": 1.0 / float(np.median(times)),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "params_gb": sum(x.nbytes for x in jax.tree.leaves(params)) / 2**30,
        "xla_temp_gb": getattr(mem, "temp_size_in_bytes", 0) / 2**30,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", nargs="+", default=["cut3r_512_dpt_4_64"])
    p.add_argument("--size", default="512x288", help="WxH (multiples of 16)")
    p.add_argument("--heads", nargs="+", default=["full", "lean"], choices=["full", "lean"])
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=Path("bench/results/bench.json"))
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: run in this process
    args = p.parse_args(argv)

    if args.one:
        res = run_one(args.preset[0], args.size, args.heads[0], args.dtype[0], args.frames, args.seed)
        print("RESULT " + json.dumps(res))
        return 0

    results = []
    torch_s = torch_vitl24_seconds()
    machine = None if torch_s is None else torch_s / REFERENCE_TORCH_VITL24_S
    for preset in args.preset:
        for dtype in args.dtype:
            for heads in args.heads:
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    "--preset",
                    preset,
                    "--size",
                    args.size,
                    "--heads",
                    heads,
                    "--dtype",
                    dtype,
                    "--frames",
                    str(args.frames),
                    "--seed",
                    str(args.seed),
                ]
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
                )
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if proc.returncode or line is None:
                    print(f"{preset} {dtype} {heads}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                    return 1
                res = json.loads(line[len("RESULT ") :])
                ref = REFERENCE_CPU.get(preset) if res["platform"] == "cpu" and args.size == "512x288" else None
                if ref:
                    res["reference_pytorch_s_per_frame_recorded"], res["reference_pytorch_peak_rss_gb"] = ref
                    res["speedup_vs_recorded"] = ref[0] / res["s_per_frame"]
                    if machine is not None:
                        res["torch_vitl24_s_here"] = torch_s
                        res["machine_factor"] = machine
                        res["reference_pytorch_s_per_frame_here"] = ref[0] * machine
                        res["speedup_vs_pytorch_here"] = ref[0] * machine / res["s_per_frame"]
                results.append(res)

    hdr = (
        f"{'model':22s} {'size':8s} {'heads':5s} {'dtype':8s} {'compile s':>9s} {'s/frame':>8s} {'fps':>6s} "
        f"{'peak GB':>8s} {'params':>6s} {'temp':>5s} {'PyTorch here':>12s} {'speed-up':>8s}"
    )
    print("peak GB: process peak RSS; params / temp: GB of parameters and of XLA's step temporaries")
    print(
        f"device: {results[0]['device']} ({results[0]['platform']}), {os.cpu_count()} cores, "
        f"{platform.python_version()}"
    )
    print(hdr)
    for r in results:
        ref = f"{r['reference_pytorch_s_per_frame_here']:.2f} s" if "speedup_vs_pytorch_here" in r else "-"
        ratio = f"{r['speedup_vs_pytorch_here']:.2f}x" if "speedup_vs_pytorch_here" in r else "-"
        print(
            f"{r['preset']:22s} {r['size']:8s} {r['heads']:5s} {r['dtype']:8s} {r['compile_s']:9.1f} "
            f"{r['s_per_frame']:8.3f} {r['fps']:6.2f} {r['peak_rss_gb']:8.2f} {r['params_gb']:6.2f} "
            f"{r['xla_temp_gb']:5.2f} "
            f"{ref:>12s} {ratio:>8s}"
        )
    if machine is not None and any("speedup_vs_pytorch_here" in r for r in results):
        print(
            f"PyTorch here: the official model's recorded s/frame (REFERENCE_CPU, all heads) × {machine:.2f}, this "
            f"machine's speed relative to the recording machine (24 PyTorch ViT-L blocks: {torch_s:.2f} s here vs "
            f"{REFERENCE_TORCH_VITL24_S} s there, timed in this run); speed-up > 1 means we are faster"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
