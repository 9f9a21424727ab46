"""Training step time, steps/s and peak memory of the jitted train step (random weights).

    python bench/bench_train.py                         # tiny Human3R, batch 2, 4 views, 64x48, CPU
    python bench/bench_train.py --preset human3r_896L --batch 8 --size 512x288 --dtype bfloat16 --remat
    python bench/bench_train.py --pipeline DATA_ROOT    # also the tf.data pipeline's batches/s

Batches are synthetic arrays in the pipeline's schema (two people per view, random depth), so
the step is measured alone; `--pipeline` times the real data pipeline separately. The SMPL-X
model completing the ground truth is --smplx (any SMPLX_NEUTRAL.npz; without it, a synthetic one when the
test tools are at hand). Compilation is timed separately. The original recipe (ViT-L/896, batch 8,
4 views, 512x288 and the other 9 resolutions) needs a 48 GB GPU; peak device memory is reported where
the backend exposes it.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from options import count, frame_size, json_path

ROOT = Path(__file__).resolve().parents[1]


def fake_batch(b: int, v: int, h: int, w: int, m: int, seed: int = 0) -> dict:
    """A batch in the pipeline's schema: a moving camera, random depth, two people per view."""
    r = np.random.default_rng(seed)
    f = np.float32
    K = np.array([[0.8 * w, 0, w / 2], [0, 0.8 * w, h / 2], [0, 0, 1]], f)
    c2w = np.tile(np.eye(4, dtype=f), (b, v, 1, 1))
    c2w[:, :, 0, 3] = np.arange(v, dtype=f) * 0.1
    depth = r.uniform(2, 8, (b, v, h, w)).astype(f)
    n = (b, v, m)
    batch = {
        "img": r.uniform(-1, 1, (b, v, h, w, 3)).astype(f),
        "ray_map": r.normal(size=(b, v, h, w, 6)).astype(f),
        "img_mask": np.ones((b, v), bool),
        "ray_mask": np.zeros((b, v), bool),
        "depth": depth,
        "valid": depth > 2.5,
        "K": np.broadcast_to(K, (b, v, 3, 3)).copy(),
        "c2w": c2w,
        "human_mask": (r.uniform(size=(b, v, h, w)) > 0.8).astype(f),
        "smpl_mask": np.zeros(n, bool),
        "smpl_root_pose": np.zeros(n + (3,), f),
        "smpl_body_pose": r.normal(0, 0.1, n + (21, 3)).astype(f),
        "smpl_jaw_pose": np.zeros(n + (3,), f),
        "smpl_leye_pose": np.zeros(n + (3,), f),
        "smpl_reye_pose": np.zeros(n + (3,), f),
        "smpl_left_hand_pose": np.zeros(n + (15, 3), f),
        "smpl_right_hand_pose": np.zeros(n + (15, 3), f),
        "smpl_betas": r.normal(0, 0.5, n + (11,)).astype(f),
        "smpl_transl": np.stack([r.uniform(-1, 1, n), r.uniform(-0.3, 0.3, n), r.uniform(3, 6, n)], -1).astype(f),
    }
    batch["smpl_root_pose"][..., 0] = np.pi  # upright in OpenCV axes
    batch["smpl_mask"][:, :, :2] = True
    batch["ray_mask"][:, 1:] = r.uniform(size=(b, v - 1)) < 0.15
    return batch


def default_smplx(scratch: Path) -> str:
    tool = ROOT.parent / "shared" / "tools" / "make_fake_smplx.py"
    if not tool.exists():
        sys.exit("no SMPL-X model: pass --smplx PATH")
    root = scratch / "smplx"
    subprocess.run(
        [sys.executable, str(tool), "--root", str(root), "--seed", "0"], check=True, stdout=subprocess.DEVNULL
    )
    return str(root)


def peak_device_bytes(device) -> int | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return (stats or {}).get("peak_bytes_in_use")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="human3r_tiny")
    ap.add_argument("--batch", type=count, default=2)
    ap.add_argument("--views", type=count, default=4)
    ap.add_argument("--size", default="64x48", type=frame_size, help="WxH")
    ap.add_argument("--humans", type=count, default=4, help="slots per view (official 10)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--remat", action="store_true")
    ap.add_argument("--steps", type=count, default=5)
    ap.add_argument("--smplx")
    ap.add_argument("--pipeline", metavar="DATA_ROOT", help="also time the tf.data pipeline on this dataset")
    ap.add_argument("--json", type=json_path, help="write the results here")
    args = ap.parse_args()
    # Everything the benchmark writes (synthetic SMPL-X, data, workdir) lives here and goes with it.
    with tempfile.TemporaryDirectory(prefix="bench_train_") as scratch:
        run(args, Path(scratch))


def run(args: argparse.Namespace, scratch: Path) -> None:
    import jax

    from human3r_jax.train.config import TrainConfig
    from human3r_jax.train.trainer import Trainer

    w, h = (int(x) for x in args.size.split("x"))
    smplx = args.smplx or default_smplx(scratch)
    data_root = args.pipeline
    if data_root is None:  # the Trainer checks its data before it starts; the step runs on fake batches
        from human3r_jax.data.synthetic import make_synthetic_bedlam

        data_root = str(scratch / "data")
        make_synthetic_bedlam(data_root, smplx, n_train=1, n_test=1, frames=max(8, args.views))
    cfg = TrainConfig(
        model=args.preset,
        random_init=True,
        smplx=smplx,
        data_root=data_root,
        batch_size=args.batch,
        num_views=args.views,
        max_humans=args.humans,
        resolutions=((w, h),),
        compute_dtype=args.dtype,
        remat=args.remat,
        workdir=str(scratch / "workdir"),
        samples_per_epoch=1000 * args.batch,
        eval_every=0,
    )
    t0 = time.perf_counter()
    trainer = Trainer(cfg, log_to_tensorboard=False)
    print(f"set-up (random init, SMPL-X): {time.perf_counter() - t0:.1f} s", flush=True)
    batch = fake_batch(args.batch, args.views, h, w, args.humans)
    t0 = time.perf_counter()
    jax.block_until_ready(trainer.train_step(batch))
    compile_s = time.perf_counter() - t0
    print(f"first step (compile + run): {compile_s:.1f} s", flush=True)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        jax.block_until_ready(trainer.train_step(batch))
        times.append(time.perf_counter() - t0)
        print(f"step: {times[-1]:.2f} s", flush=True)
    step_s = float(np.median(times))
    device = jax.devices()[0]
    result = {
        "preset": args.preset,
        "batch": args.batch,
        "views": args.views,
        "size": [w, h],
        "slots": args.humans,
        "dtype": args.dtype,
        "remat": args.remat,
        "device": device.device_kind,
        "platform": platform.platform(),
        "trainable_params": trainer.n_trainable,
        "compile_s": round(compile_s, 1),
        "step_s": round(step_s, 3),
        "steps_per_s": round(1 / step_s, 3),
        "frames_per_s": round(args.batch * args.views / step_s, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_device_gb": (lambda b: None if b is None else round(b / 2**30, 2))(peak_device_bytes(device)),
    }
    if args.pipeline:
        from human3r_jax.data.bedlam import BedlamIndex, iterate

        it = iterate(BedlamIndex(args.pipeline), batch_size=args.batch, seed=0, resolutions=((w, h),))
        next(it)
        t0 = time.perf_counter()
        for _ in range(10):
            next(it)
        result["pipeline_batches_per_s"] = round(10 / (time.perf_counter() - t0), 2)
        it.close()
    print(
        f"{'preset':14} {'batch':>5} {'views':>5} {'size':>9} {'dtype':>8} {'compile s':>9} {'s/step':>8} "
        f"{'steps/s':>8} {'RSS GB':>7} {'dev GB':>7}"
    )
    print(
        f"{args.preset:14} {args.batch:5d} {args.views:5d} {args.size:>9} {args.dtype:>8} {result['compile_s']:9.1f} "
        f"{step_s:8.3f} {1 / step_s:8.3f} {result['peak_rss_gb']:7.2f} {result['peak_device_gb']!s:>7}"
    )
    if "pipeline_batches_per_s" in result:
        print(f"pipeline: {result['pipeline_batches_per_s']} batches/s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
