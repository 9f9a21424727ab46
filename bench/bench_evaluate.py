"""Wall time of `human3r-jax evaluate human` on a whole synthetic dataset (random weights, CPU or GPU).

    python bench/bench_evaluate.py --preset human3r_tiny --dataset emdb1 --frames 20 --smplx DIR

Writes a synthetic dataset in the official layout (EMDB-1: the 17 official sequences; EMDB-2: 25; 3DPW: 4
sequences; RICH: 2) at the real image sizes, and synthetic body models (the SMPL-X neutral file comes from
--smplx DIR/smplx/SMPLX_NEUTRAL.npz: any SMPLX_NEUTRAL.npz, the tests make a synthetic one), then
times the evaluation from scratch (model + scoring) and a `--rescore` (scoring only) at the official size 512.
Prints a table and writes JSON. The original takes over 3 hours for about 20 videos on an A6000.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from options import count, json_path

TESTS = Path(__file__).resolve().parents[1] / "tests"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="human3r_tiny")
    p.add_argument("--dataset", default="emdb1", choices=["3dpw", "emdb1", "emdb2", "rich"])
    p.add_argument("--frames", type=count, default=20, help="frames per sequence")
    p.add_argument("--smplx", type=Path, required=True, help="folder holding smplx/SMPLX_NEUTRAL.npz")
    p.add_argument("--json", type=json_path, default=Path("bench/results/evaluate.json"))
    args = p.parse_args(argv)

    import jax
    import numpy as np

    sys.path.insert(0, str(TESTS))  # the synthetic dataset and body-model writers of the tests
    from fake_body_models import write_fake_body_models
    from fake_human_datasets import write_3dpw_raw, write_emdb, write_rich

    from human3r_jax.evaluation import human

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        models = write_fake_body_models(tmp / "models", args.smplx / "smplx" / "SMPLX_NEUTRAL.npz")
        root = tmp / "data"
        if args.dataset == "3dpw":
            write_3dpw_raw(
                root,
                0,
                sequences=("courtyard_a_00", "courtyard_b_01", "downtown_c_00", "office_d_01"),
                frames=args.frames,
                size=(1080, 1920),
            )
        elif args.dataset == "rich":
            write_rich(root, 0, frames=args.frames, size=(4112, 3008))
        else:
            write_emdb(root, int(args.dataset[-1]), 0, frames=args.frames, size=(1440, 1920))
        setup = time.perf_counter() - t0
        run = {"body_models": models, "random_weights": args.preset, "progress": False, "print_table": False}
        t0 = time.perf_counter()
        entry = human.evaluate(args.dataset, root, tmp / "out", **run)
        full = time.perf_counter() - t0
        t0 = time.perf_counter()
        human.evaluate(args.dataset, root, tmp / "out", rescore=True, **{**run, "random_weights": None})
        score = time.perf_counter() - t0
        frames = sum(len(np.load(f)["frame_name"]) for f in (tmp / "out" / args.dataset).glob("*.npz"))
    n_seq = len(entry["sequences"])
    res = {
        "preset": args.preset,
        "dataset": args.dataset,
        "device": str(jax.devices()[0].device_kind),
        "sequences": n_seq,
        "frames_per_sequence": args.frames,
        "setup_s": setup,
        "evaluate_s": full,
        "scoring_s": score,
        "model_s": full - score,
        "s_per_frame": full / max(frames, 1),
    }
    print(
        f"{'dataset':8s} {'model':14s} {'seq':>4s} {'frames':>7s} {'total s':>8s} {'model s':>8s} {'score s':>8s} "
        f"{'s/frame':>8s}"
    )
    print(
        f"{args.dataset:8s} {args.preset:14s} {n_seq:4d} {frames:7d} {full:8.1f} {full - score:8.1f} {score:8.1f} "
        f"{res['s_per_frame']:8.3f}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
