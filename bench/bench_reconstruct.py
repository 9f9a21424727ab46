"""End-to-end `reconstruct` speed against the model step alone (random weights, CPU or GPU).

    python bench/bench_reconstruct.py --preset cut3r_512_dpt_4_64 --frames 6

Forward-only: the jitted step (the heads reconstruct uses) on preprocessed frames, nothing else.
End-to-end: `reconstruct` on samples/sample.mp4 at 512 — decoding, preprocessing (in a reader
thread), step, post-processing and writing — per frame, after the first (compiling) frame.
Writes JSON and prints a table; the goal is end-to-end within 10% of forward-only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from options import count, json_path

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample.mp4"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cut3r_512_dpt_4_64")
    p.add_argument("--frames", type=count, default=6)
    p.add_argument("--json", type=json_path, default=Path("bench/results/reconstruct.json"))
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from human3r_jax import runtime
    from human3r_jax.data.images import preprocess
    from human3r_jax.data.video import FrameSource
    from human3r_jax.models.cut3r import StepOptions, make_frame
    from human3r_jax.reconstruct import Settings, load_model, reconstruct

    model = load_model(random_weights=args.preset)
    imgs = [jnp.asarray(preprocess(r.image, 512))[None] for r in FrameSource(SAMPLE, max_frames=args.frames)]
    opts = StepOptions(rgb=False, cross=False)
    carry = runtime.init_carry(model.graphdef, model.params, 1)
    times = []
    for img in imgs:
        t0 = time.perf_counter()
        carry, out = runtime.step(model.graphdef, model.params, carry, make_frame(img), opts)
        jax.block_until_ready((carry, out))
        times.append(time.perf_counter() - t0)
    forward = float(np.mean(times[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        reconstruct([SAMPLE], Path(tmp) / "out", model, Settings(max_frames=args.frames), progress=False)
        timing = json.loads((Path(tmp) / "out" / "meta.json").read_text())["timing"]
    e2e = timing["end_to_end_s_per_frame"]
    res = {
        "preset": args.preset,
        "device": str(jax.devices()[0].device_kind),
        "frames": args.frames,
        "forward_only_s_per_frame": forward,
        "end_to_end_s_per_frame": e2e,
        "forward_only_fps": 1 / forward,
        "end_to_end_fps": 1 / e2e,
        "overhead": e2e / forward - 1,
    }
    print(
        f"{'model':22s} {'forward s/frame':>15s} {'end-to-end s/frame':>18s} {'fps fwd':>8s} {'fps e2e':>8s} "
        f"{'overhead':>9s}"
    )
    print(
        f"{args.preset:22s} {forward:15.3f} {e2e:18.3f} {1 / forward:8.3f} {1 / e2e:8.3f} {100 * res['overhead']:8.1f}%"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
