"""Per-frame time and peak memory of the jitted online step (random weights).

    python bench/bench.py                                   # CUT3R 512 DPT at 512x288, float32
    python bench/bench.py --preset cut3r_224_linear_4 --size 224x224
    python bench/bench.py --heads full lean --dtype float32 bfloat16 --json bench/results/cpu.json
    python bench/bench.py --preset cut3r_224_linear_4 --size 224x224 --against-torch cut3r=CUT3R_CHECKOUT
    python bench/bench.py --preset human3r_672S --against-torch human3r=HUMAN3R_CHECKOUT dinov2=DINOV2_CHECKOUT

Each configuration runs in a fresh subprocess (so its peak RSS is its own): the model is built with
random weights, the step is compiled (timed separately), then `--frames` steps are timed (median).
`full` computes all heads as the official demo does (self, cross, rgb); `lean` only the self-view
points, confidence and pose (what reconstruction needs).

The official PyTorch model is the reference. With `--against-torch`, it is timed in the same run
(bench/torch_reference.py, its own subprocess per preset: the official online loop, all heads, float32,
same frames) from the official checkouts given: CUT3R presets from the CUT3R repository (cut3r=), Human3R
presets from the Human3R repository (human3r=) with DINOv2's hub code (dinov2=, or torch.hub's cache).
Without it, figures recorded on the project's 2-core development CPU (`REFERENCE_CPU`) are scaled to
this machine by a same-run PyTorch calibration. Ratios > 1 mean ours is faster.
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

from options import count, frame_size, json_path
from torch_reference import OfficialCodeError, check_presets, parse_sources

from human3r_jax.allocator import retain_freed_memory
from human3r_jax.config import CUT3R_PRESETS, HUMAN3R_PRESETS

PRESET_NAMES = sorted(CUT3R_PRESETS) + sorted(HUMAN3R_PRESETS)

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


def run_result(cmd: list[str]) -> tuple[dict | None, subprocess.CompletedProcess]:
    """Run one benchmark subprocess: (its `RESULT {json}` line parsed, or None on failure; the process)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    return (json.loads(line[len("RESULT ") :]) if proc.returncode == 0 and line else None), proc


def ours_cmd(preset: str, heads: str, dtype: str, args) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--one",
        *("--preset", preset, "--size", args.size, "--heads", heads, "--dtype", dtype),
        *("--frames", str(args.frames), "--seed", str(args.seed)),
    ]


def official_cmd(preset: str, sources: dict[str, Path], args) -> list[str]:
    """bench/torch_reference.py on the same frames; Human3R gets as many detections as our human slots."""
    from human3r_jax.config import preset as model_preset

    cmd = [sys.executable, str(Path(__file__).with_name("torch_reference.py"))]
    cmd += ["--preset", preset, "--size", args.size, "--frames", str(args.frames), "--seed", str(args.seed)]
    humans = getattr(model_preset(preset), "max_humans", None)
    if humans is not None:
        cmd += ["--humans", str(humans)]
    for name, path in sources.items():
        cmd += [f"--{name}", str(path)]
    return cmd


def add_recorded_reference(res: dict, size: str, torch_s: float | None) -> None:
    """REFERENCE_CPU for this preset, scaled to this machine by the same-run PyTorch calibration."""
    ref = REFERENCE_CPU.get(res["preset"]) if res["platform"] == "cpu" and size == "512x288" else None
    if not ref:
        return
    res["reference_pytorch_s_per_frame_recorded"], res["reference_pytorch_peak_rss_gb"] = ref
    res["speedup_vs_recorded"] = ref[0] / res["s_per_frame"]
    if torch_s is not None:
        machine = torch_s / REFERENCE_TORCH_VITL24_S
        res["torch_vitl24_s_here"] = torch_s
        res["machine_factor"] = machine
        res["reference_pytorch_s_per_frame_here"] = ref[0] * machine
        res["speedup_vs_pytorch_here"] = ref[0] * machine / res["s_per_frame"]


def reference_columns(r: dict) -> tuple[str, str, str]:
    """(PyTorch s/frame, PyTorch peak GB, speed-up) of a row: measured in this run, or recorded and scaled."""
    if "official" in r:
        o = r["official"]
        return f"{o['s_per_frame']:.2f} s", f"{o['peak_rss_gb']:.2f}", f"{r['speedup_vs_official']:.2f}x"
    if "speedup_vs_pytorch_here" in r:
        return (
            f"{r['reference_pytorch_s_per_frame_here']:.2f} s",
            f"{r['reference_pytorch_peak_rss_gb']:.1f}",
            f"{r['speedup_vs_pytorch_here']:.2f}x",
        )
    return "-", "-", "-"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", nargs="+", default=["cut3r_512_dpt_4_64"], choices=PRESET_NAMES)
    p.add_argument("--size", default="512x288", type=frame_size, help="WxH (multiples of 16)")
    p.add_argument("--heads", nargs="+", default=["full", "lean"], choices=["full", "lean"])
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    p.add_argument("--frames", type=count, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=json_path, default=Path("bench/results/bench.json"))
    p.add_argument(
        "--against-torch",
        nargs="+",
        metavar="NAME=PATH",
        help="time the official PyTorch model in this run, from these checkouts (human3r=, cut3r=, dinov2=)",
    )
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: run in this process
    args = p.parse_args(argv)

    if args.one:
        retain_freed_memory()  # as the CLI does (human3r_jax/allocator.py)
        res = run_one(args.preset[0], args.size, args.heads[0], args.dtype[0], args.frames, args.seed)
        print("RESULT " + json.dumps(res))
        return 0

    sources = None
    if args.against_torch:
        try:
            sources = parse_sources(args.against_torch)
            check_presets(sources, args.preset)
        except OfficialCodeError as e:
            print(e, file=sys.stderr)
            return 2
    torch_s = torch_vitl24_seconds() if sources is None else None

    results = []
    for preset in args.preset:
        rows = []
        for dtype in args.dtype:
            for heads in args.heads:
                res, proc = run_result(ours_cmd(preset, heads, dtype, args))
                if res is None:
                    print(f"{preset} {dtype} {heads}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                    return 1
                rows.append(res)
        if sources is None:
            for res in rows:
                add_recorded_reference(res, args.size, torch_s)
        else:
            official, proc = run_result(official_cmd(preset, sources, args))
            if official is None:
                if proc.returncode == 2:  # a bad checkout, or a package the official code needs
                    print(proc.stderr.strip().splitlines()[-1], file=sys.stderr)
                    return 2
                print(f"{preset} official PyTorch: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            for res in rows:
                res["official"] = official
                res["speedup_vs_official"] = official["s_per_frame"] / res["s_per_frame"]
        results += rows

    hdr = (
        f"{'model':22s} {'size':8s} {'heads':5s} {'dtype':8s} {'compile s':>9s} {'s/frame':>8s} {'fps':>6s} "
        f"{'peak GB':>8s} {'params':>6s} {'temp':>5s} {'PyTorch s':>10s} {'PyTorch GB':>10s} {'speed-up':>8s}"
    )
    print("peak GB: process peak RSS; params / temp: GB of parameters and of XLA's step temporaries")
    print(
        f"device: {results[0]['device']} ({results[0]['platform']}), {os.cpu_count()} cores, "
        f"{platform.python_version()}"
    )
    print(hdr)
    for r in results:
        ref_s, ref_gb, ratio = reference_columns(r)
        print(
            f"{r['preset']:22s} {r['size']:8s} {r['heads']:5s} {r['dtype']:8s} {r['compile_s']:9.1f} "
            f"{r['s_per_frame']:8.3f} {r['fps']:6.2f} {r['peak_rss_gb']:8.2f} {r['params_gb']:6.2f} "
            f"{r['xla_temp_gb']:5.2f} {ref_s:>10s} {ref_gb:>10s} {ratio:>8s}"
        )
    if sources is not None:
        print(
            "PyTorch: the official model timed in this run (all heads, float32, same frames, median after a "
            "warm-up frame; its peak RSS in its own process); speed-up > 1 means we are faster"
        )
        for preset, o in {r["preset"]: r["official"] for r in results}.items():
            humans = f", humans detected per frame {o['humans_per_frame']}" if "humans_per_frame" in o else ""
            print(f"  {preset}: {o['code']}, {o['parameters']:,} parameters, {o['threads']} threads{humans}")
    elif any("speedup_vs_pytorch_here" in r for r in results):
        machine = torch_s / REFERENCE_TORCH_VITL24_S
        print(
            f"PyTorch: the official model's recorded s/frame (REFERENCE_CPU, all heads) × {machine:.2f}, this "
            f"machine's speed relative to the recording machine (24 PyTorch ViT-L blocks: {torch_s:.2f} s here vs "
            f"{REFERENCE_TORCH_VITL24_S} s there, timed in this run), and its recorded peak RSS; speed-up > 1 means "
            "we are faster (--against-torch times the official model here instead)"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
